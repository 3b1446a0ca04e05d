// WebSocket (and other Upgrade) requests. Once the upstream agrees, the two
// sockets are piped; until then an upgrade follows the same rules as a plain
// request (SPEC.md §3): the same forwarding headers (X-Forwarded-For appended
// as "existing, client", Connection-named headers stripped), a connect attempt
// that times out is repeated, a refused one fails over at once, and only when
// no upstream could be reached does the client get the 502 page. http-proxy-3
// was used here first; it cannot fail over (it destroys the client socket on
// the first error), has no response timeout, and writes X-Forwarded-For its
// own way, so the few lines below do the job instead.
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Pipeline } from './pipeline.ts';
import type { Upstream } from '../upstream/upstreams.ts';
import { route } from '../route/router.ts';
import { toUpstreamHeaders } from '../upstream/headers.ts';
import { classify } from '../upstream/forward.ts';
import { checkRequest } from '../http/hygiene.ts';
import { connectionInfo } from '../listen/connections.ts';

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 421: 'Misdirected Request', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };
const HOP_BY_HOP_RESPONSE = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'proxy-connection', 'trailer']);

export function handleUpgrade(pipeline: Pipeline, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const { config, routes } = pipeline.runtime;
  socket.on('error', () => {});
  const refuse = (status: number, reason: string, extra = '') =>
    socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ''}\r\nx-scrubber: ${reason}\r\n${extra}content-length: 0\r\nconnection: close\r\n\r\n`);
  const problem = checkRequest(req.method ?? 'GET', req.url ?? '/', req.rawHeaders, config.limits.maxHeaderCount);
  if (problem) return void refuse(problem.status, problem.reason);
  const r = route(routes, req.headers.host);
  if (!r.ok) return void refuse(r.status, r.reason);
  const conn = connectionInfo(req.socket);
  conn.requests++;
  if (!pipeline.filter.admit(req, null, { source: conn.source, client: conn.client, domain: r.domain, newConnection: conn.requests === 1 })) return void socket.destroy();
  if (r.domain.maintenance.enabled) return void refuse(503, 'maintenance', `retry-after: ${r.domain.maintenance.retryAfterSeconds}\r\n`);
  const headers = toUpstreamHeaders(req.rawHeaders, { client: conn.client, proto: conn.tls ? 'https' : 'http', host: r.host }, true);
  const order = pipeline.upstreams.groups.get(r.domain.name)!.order();
  new UpgradeForwarding(pipeline, req, socket, head, headers, order, r.domain.name).start();
}

class UpgradeForwarding {
  private idx = 0;
  private attempt = 1;
  private done = false;
  private current: http.ClientRequest | null = null;

  private readonly pipeline: Pipeline;
  private readonly req: IncomingMessage;
  private readonly socket: Duplex;
  private readonly head: Buffer;
  private readonly headers: string[];
  private readonly order: Upstream[];
  private readonly domain: string;

  constructor(pipeline: Pipeline, req: IncomingMessage, socket: Duplex, head: Buffer, headers: string[], order: Upstream[], domain: string) {
    this.pipeline = pipeline;
    this.req = req;
    this.socket = socket;
    this.head = head;
    this.headers = headers;
    this.order = order;
    this.domain = domain;
    // A client that leaves while we are still connecting takes the attempt with it.
    socket.once('close', () => { if (!this.done) { this.done = true; this.current?.destroy(); } });
  }

  start(): void {
    if (this.done) return;
    const up = this.order[this.idx];
    const { upstream } = this.pipeline.runtime.config;
    const mod = up.tls ? https : http;
    const preq = mod.request({
      host: up.host, port: up.port, method: this.req.method, path: this.req.url, headers: this.headers, setHost: false, agent: false,
      ...(up.tls ? { ...up.tlsOptions, servername: this.domain } : {}),
    });
    this.current = preq;
    let settled = false;
    let connected = false;
    const timer = setTimeout(() => {
      const code = connected ? 'UND_ERR_HEADERS_TIMEOUT' : 'UND_ERR_CONNECT_TIMEOUT';
      preq.destroy(Object.assign(new Error(code), { code }));
    }, upstream.connectTimeoutMs);
    preq.once('socket', (s: Socket) => {
      s.once(up.tls ? 'secureConnect' : 'connect', () => {
        connected = true;
        clearTimeout(timer);
        // From here on the upstream has the request; a silence is a response timeout.
        const rt = setTimeout(() => preq.destroy(Object.assign(new Error('response timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' })), upstream.responseTimeoutMs);
        preq.once('close', () => clearTimeout(rt));
        preq.once('upgrade', () => clearTimeout(rt));
        preq.once('response', () => clearTimeout(rt));
      });
    });
    preq.once('close', () => clearTimeout(timer));

    preq.once('upgrade', (pres: IncomingMessage, psocket: Duplex, phead: Buffer) => {
      settled = true;
      psocket.on('error', () => {});
      if (this.done) { psocket.destroy(); return; }
      this.done = true;
      up.report(true);
      let head = `HTTP/1.1 ${pres.statusCode} ${pres.statusMessage ?? 'Switching Protocols'}\r\n`;
      const raw = pres.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
      this.socket.write(head + '\r\n');
      if (phead.length) this.socket.write(phead);
      if (this.head.length) psocket.write(this.head);
      psocket.pipe(this.socket).pipe(psocket);
      // Either side gone: the other goes too, so no half-dead tunnel lingers.
      psocket.once('close', () => this.socket.destroy());
      this.socket.once('close', () => psocket.destroy());
    });

    preq.once('response', (pres: IncomingMessage) => {
      // The upstream declined the upgrade: relay its answer as it is, and close.
      settled = true;
      if (this.done) { pres.destroy(); return; }
      this.done = true;
      up.report(true);
      let head = `HTTP/1.1 ${pres.statusCode} ${pres.statusMessage ?? ''}\r\n`;
      const raw = pres.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP_RESPONSE.has(raw[i].toLowerCase())) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
      this.socket.write(head + 'connection: close\r\n\r\n');
      pres.pipe(this.socket);
      pres.once('error', () => this.socket.destroy());
    });

    preq.once('error', (err) => {
      if (settled || this.done) { if (!this.done) this.socket.destroy(); return; }
      this.fail(err);
    });
    preq.end();
  }

  private fail(err: unknown): void {
    const kind = classify(err);
    const up = this.order[this.idx];
    if (kind === 'connect-timeout' && this.attempt < this.pipeline.runtime.config.upstream.connectAttempts) { this.attempt++; this.start(); return; }
    up.report(false);
    // An upgrade is a GET without a body: every failure before an answer can move on.
    if (kind !== 'response-timeout' && this.idx + 1 < this.order.length) { this.idx++; this.attempt = 1; this.start(); return; }
    this.done = true;
    const reason = kind === 'response-timeout' ? 'upstream-timeout' : kind === 'connect-timeout' ? 'connect-timeout' : kind === 'connect' ? 'connect-refused' : 'upstream-error';
    const status = kind === 'response-timeout' ? 504 : 502;
    void this.pipeline.pages.render(status, reason, this.domain).then((html) => {
      if (this.socket.destroyed) return;
      this.socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nx-scrubber: ${reason}\r\ncontent-type: text/html; charset=utf-8\r\n` +
        `cache-control: no-store\r\ncontent-length: ${Buffer.byteLength(html)}\r\nconnection: close\r\n\r\n${html}`);
    }, () => this.socket.destroy());
  }
}
