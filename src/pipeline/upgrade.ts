// The last step of an upgrade (WebSocket) request's flow: once the upstream
// agrees, the two sockets are piped. Until then an upgrade follows the same
// rules as a plain request (SPEC.md §3): a connect attempt that times out is
// repeated, a refused one fails over at once, and only when no upstream could
// be reached does the client get the 502 page. http-proxy-3 was used here
// first; it cannot fail over (it destroys the client socket on the first
// error) and has no response timeout, so the few lines below do the job.
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Upstream } from '../upstream/upstreams.ts';
import type { Pages } from '../respond/pages.ts';
import type { ProxyReason, UpstreamError } from '../observe/observation.ts';
import { classify } from '../upstream/forward.ts';
import { endWith, rawResponse } from '../respond/reply.ts';
import { toClientRawHeaders } from '../upstream/headers.ts';
import type { Tunnels } from '../upstream/tunnel.ts';

/** A tunnel with no byte either way for this long is closed (a peer that vanished without a FIN, a half-open one). */
const TUNNEL_IDLE_MS = 300_000;

export interface UpgradeRequest {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  headers: string[];
  domain: string;
  order: Upstream[];
  pages: Pages;
  tunnels: Tunnels;
  connectTimeoutMs: number;
  connectAttempts: number;
  responseTimeoutMs: number;
  /** Longest pause in a declined upgrade's answer (upstream.bodyTimeoutMs, as for any response); 0 = none. */
  bodyTimeoutMs: number;
  /** The domain's proxyErrorPages: an application 502/503/504 is answered with the proxy's page, as for any request. */
  replaceErrorPages?: boolean;
}

const REPLACEABLE = new Set([502, 503, 504]);

export interface UpgradeOutcome {
  status: number;
  bytesOut: number;
  proxyReason: ProxyReason | null;
  upstreamError: UpstreamError;
  contentType: string | null;
  clientAborted: boolean;
}

/** Forwards the upgrade; `done` is called once, when the handshake is answered (tunnel open, declined, or failed). */
export function forwardUpgrade(u: UpgradeRequest, done: (o: UpgradeOutcome) => void): void {
  new UpgradeForwarding(u, done).start();
}

class UpgradeForwarding {
  private idx = 0;
  private attempt = 1;
  private done = false;
  private current: http.ClientRequest | null = null;
  private readonly u: UpgradeRequest;
  private readonly report: (o: UpgradeOutcome) => void;

  constructor(u: UpgradeRequest, report: (o: UpgradeOutcome) => void) {
    this.u = u;
    this.report = report;
    // Not a tunnel yet, nor a request Node's server tracks (it let the socket go at the Upgrade head): in the registry
    // the drain empties until it becomes a tunnel, or shutdown would wait for an upstream that never answers.
    u.tunnels.connecting.add(u.socket);
    // A client that leaves while we are still connecting takes the attempt with it.
    u.socket.once('close', () => {
      u.tunnels.connecting.delete(u.socket);
      if (this.done) return;
      this.done = true;
      this.current?.destroy();
      report({ status: 0, bytesOut: 0, proxyReason: null, upstreamError: null, contentType: null, clientAborted: true });
    });
  }

  start(): void {
    if (this.done) return;
    const u = this.u;
    const up = u.order[this.idx];
    const mod = up.tls ? https : http;
    let preq: http.ClientRequest;
    try {
      preq = mod.request({
        host: up.host, port: up.port, method: u.req.method, path: u.req.url, headers: u.headers, setHost: false, agent: false,
        ...(up.tls ? { ...up.tlsOptions, servername: u.domain } : {}),
      });
    } catch (err) {
      // Node refused to write the request (a character it will not send): the proxy's doing, not the upstream's.
      this.refuseInvalid(err);
      return;
    }
    this.current = preq;
    let settled = false;
    let connected = false;
    const timer = setTimeout(() => {
      const code = connected ? 'UND_ERR_HEADERS_TIMEOUT' : 'UND_ERR_CONNECT_TIMEOUT';
      preq.destroy(Object.assign(new Error(code), { code }));
    }, u.connectTimeoutMs);
    preq.once('socket', (s: Socket) => {
      s.once(up.tls ? 'secureConnect' : 'connect', () => {
        connected = true;
        clearTimeout(timer);
        // From here on the upstream has the request; a silence is a response timeout.
        const rt = setTimeout(() => preq.destroy(Object.assign(new Error('response timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' })), u.responseTimeoutMs);
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
      // An upstream that half-closes first still reads: its FIN is passed on by the tunnel (Node's client socket would
      // end our side toward it at once, and the client's later bytes destroyed the tunnel).
      (psocket as Socket).allowHalfOpen = true;
      this.done = true;
      up.report(true);
      let head = `HTTP/1.1 ${pres.statusCode} ${pres.statusMessage ?? 'Switching Protocols'}\r\n`;
      const raw = toClientRawHeaders(pres.rawHeaders, true);
      for (let i = 0; i < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
      // Latin-1: Node read the upstream's header bytes as Latin-1, so written back so they are the same bytes (as UTF-8,
      // every byte past 0x7F of a header value came out as two others).
      u.socket.write(head + '\r\n', 'latin1');
      u.tunnels.connecting.delete(u.socket);
      // Idle timeout, a bounded half-close, and shutdown's closeAll: a tunnel never lingers.
      u.tunnels.add(u.socket, psocket, { idleTimeoutMs: TUNNEL_IDLE_MS, clientHead: u.head, upstreamHead: phead, domain: u.domain });
      this.report({ status: pres.statusCode ?? 101, bytesOut: 0, proxyReason: null, upstreamError: null, contentType: null, clientAborted: false });
    });

    preq.once('response', (pres: IncomingMessage) => {
      // The upstream declined the upgrade: relay its answer as it is, and close.
      settled = true;
      if (this.done) { pres.destroy(); return; }
      this.done = true;
      up.report(true);
      // The rules of any response (upstream/forward.ts): a transfer coding other than chunked is the upstream's 502 (Node
      // undoes only the chunking, the body would reach the client as if plain); with proxyErrorPages its 502/503/504
      // page is replaced by the proxy's, with its status.
      const te = pres.headers['transfer-encoding'], code = pres.statusCode ?? 0;
      if (te !== undefined && !/^\s*chunked\s*$/i.test(te)) { pres.destroy(); this.page(502, 'upstream-error', '5xx'); return; }
      if (u.replaceErrorPages && REPLACEABLE.has(code)) { pres.destroy(); this.page(code, 'upstream-page', '5xx'); return; }
      let head = `HTTP/1.1 ${pres.statusCode} ${pres.statusMessage ?? ''}\r\n`;
      const raw = toClientRawHeaders(pres.rawHeaders, false);
      for (let i = 0; i < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
      u.socket.write(head + 'connection: close\r\n\r\n', 'latin1');
      let bytes = 0;
      pres.on('data', (c: Buffer) => { bytes += c.length; });
      // Closed once the answer is written, as Node closes a `connection: close` response's socket: the server's socket
      // allows a half-open connection, so an end() alone leaves it (and shutdown, which waits for it) to the client.
      pres.pipe(u.socket, { end: false });
      pres.once('end', () => u.socket.end(() => u.socket.destroy()));
      pres.once('error', () => u.socket.destroy());
      // undici times a plain response's pauses; here nothing else would, and an upstream that stalls mid-answer would
      // hold both sockets (and shutdown, which waits for the client's) for as long as it likes.
      if (u.bodyTimeoutMs > 0) pres.setTimeout(u.bodyTimeoutMs, () => pres.destroy(new Error('upstream body timeout')));
      const status = pres.statusCode ?? 0;
      const ct = pres.headers['content-type'];
      // The request holds its slots until this is reported, so it is reported however the response ends: whole, cut
      // by the upstream, or left by the client (then the upstream's response is cut too, not read on for no one).
      let ended = false;
      const end = () => { if (!ended) { ended = true; this.report({ status, bytesOut: bytes, proxyReason: null, upstreamError: status >= 500 ? '5xx' : null, contentType: ct ?? null, clientAborted: !pres.complete }); } };
      pres.once('end', end);
      pres.once('close', end);
      // Node left the client's socket paused: nothing it sends now is for anyone (this answer closes the connection),
      // but only reading it sees the client leave (a FIN counts, as nginx counts it, whatever the upstream is doing).
      const gone = () => { pres.destroy(); u.socket.destroy(); end(); };
      u.socket.once('end', gone);
      u.socket.once('close', gone);
      u.socket.resume();
    });

    preq.once('error', (err) => {
      if (settled || this.done) { if (!this.done) u.socket.destroy(); return; }
      this.fail(err);
    });
    preq.end();
  }

  private refuseInvalid(_err: unknown): void {
    this.done = true;
    this.report({ status: 400, bytesOut: 0, proxyReason: 'bad-request', upstreamError: null, contentType: null, clientAborted: false });
    if (!this.u.socket.destroyed) endWith(this.u.socket, rawResponse(400, 'bad-request'));
  }

  private fail(err: unknown): void {
    const u = this.u;
    const kind = classify(err);
    if (kind === 'invalid') return this.refuseInvalid(err);
    const up = u.order[this.idx];
    if (kind === 'connect-timeout' && this.attempt < u.connectAttempts) { this.attempt++; this.start(); return; }
    up.report(false);
    // An upgrade is a GET without a body: every failure before an answer can move on.
    if (kind !== 'response-timeout' && this.idx + 1 < u.order.length) { this.idx++; this.attempt = 1; this.start(); return; }
    this.done = true;
    const reason: ProxyReason = kind === 'response-timeout' ? 'upstream-timeout' : kind === 'connect-timeout' ? 'connect-timeout' : kind === 'connect' ? 'connect-refused' : 'upstream-error';
    const status = kind === 'response-timeout' ? 504 : 502;
    const upstreamError: UpstreamError = kind === 'response-timeout' ? 'timeout' : kind === 'reset' || kind === 'other' ? 'reset' : 'connect';
    this.page(status, reason, upstreamError);
  }

  /** Answers the handshake with the proxy's page (done is set) and reports it, with the page's bytes once written. */
  private page(status: number, reason: ProxyReason, upstreamError: UpstreamError): void {
    const u = this.u;
    const told = (bytesOut: number) => this.report({ status, bytesOut, proxyReason: reason, upstreamError, contentType: null, clientAborted: false });
    void u.pages.render(status, reason, u.domain).then((html) => {
      if (u.socket.destroyed) return told(0);
      endWith(u.socket, rawResponse(status, reason, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }, html));
      told(Buffer.byteLength(html));
    }, () => { u.socket.destroy(); told(0); });
  }
}
