// The listening sockets: plain HTTP and HTTPS (certificate chosen by SNI).
// Every server shares the filter's BlockList, so a banned source is refused at
// accept, before any HTTP parsing.
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import fs from 'node:fs';
import type net from 'node:net';
import type { Config, HostPort } from '../config/schema.ts';
import type { Pipeline } from '../pipeline/pipeline.ts';
import { connectionInfo, SourceConnections } from './connections.ts';
import { rawResponse } from '../respond/reply.ts';

type Server = http.Server | https.Server;

const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'headers-too-large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request-timeout'],
  HPE_HEADERS_TIMEOUT: [408, 'request-timeout'],
};

/** Loads the certificates of the config into SNI contexts; throws with the file name when one is unreadable. */
export function loadCertificates(config: Config): Map<string, tls.SecureContext> {
  const map = new Map<string, tls.SecureContext>();
  for (const c of config.tls.certs) {
    const ctx = tls.createSecureContext({ cert: fs.readFileSync(c.cert), key: fs.readFileSync(c.key) });
    for (const d of c.domains) map.set(d.toLowerCase(), ctx);
  }
  return map;
}

function sniLookup(certs: () => Map<string, tls.SecureContext>, name: string): tls.SecureContext | undefined {
  const m = certs();
  const n = name.toLowerCase();
  return m.get(n) ?? m.get('*.' + n.slice(n.indexOf('.') + 1)) ?? m.values().next().value;
}

export class Listeners {
  readonly servers: Server[] = [];
  readonly connections: SourceConnections;
  certs = new Map<string, tls.SecureContext>();

  private readonly pipeline: Pipeline;

  constructor(pipeline: Pipeline, config: Config) {
    this.pipeline = pipeline;
    this.connections = new SourceConnections(config.limits.maxConnectionsPerSource);
    this.certs = loadCertificates(config);
  }

  private configure(server: Server, config: Config): void {
    const l = config.limits;
    (server as Server & { blockList: net.BlockList }).blockList = this.pipeline.filter.blockList;
    server.headersTimeout = l.headerTimeoutMs;
    server.requestTimeout = l.requestTimeoutMs;
    server.keepAliveTimeout = l.idleTimeoutMs;
    // One more than the limit, so that "too many" is seen instead of silently cut.
    server.maxHeadersCount = l.maxHeaderCount + 1;
  }

  private create(tlsServer: boolean, config: Config): Server {
    const opts: http.ServerOptions = {
      maxHeaderSize: config.limits.maxHeaderBytes,
      // The pipeline answers a missing Host itself, with its own page and X-Scrubber.
      requireHostHeader: false,
      connectionsCheckingInterval: 500,
      noDelay: true,
    };
    const server: Server = tlsServer
      ? https.createServer({ ...opts, SNICallback: (name, cb) => cb(null, sniLookup(() => this.certs, name)), ALPNProtocols: ['http/1.1'] })
      : http.createServer(opts);
    this.configure(server, config);
    server.on(tlsServer ? 'secureConnection' : 'connection', (socket: net.Socket) => this.onConnection(socket));
    server.on('request', this.pipeline.handle);
    server.on('upgrade', this.pipeline.handleUpgrade);
    server.on('connect', (_req, socket) => socket.end(rawResponse(405, 'method-not-allowed')));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      // Counted, never logged per request: attack traffic is not access-logged.
      const source = connectionInfo(socket).source;
      this.pipeline.filter.onClientError?.(source, err.code ?? 'unknown');
      if (socket.writable && !(socket as net.Socket & { _httpMessage?: unknown })._httpMessage) {
        const [status, reason] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'bad-request'];
        socket.end(rawResponse(status, reason));
      } else socket.destroy();
    });
    return server;
  }

  private onConnection(socket: net.Socket): void {
    const info = connectionInfo(socket);
    socket.on('error', () => {});
    if (!this.connections.admit(socket, info.source) || !this.pipeline.filter.onConnection(socket, info.source)) socket.destroy();
  }

  async listen(config: Config): Promise<void> {
    const bind = (server: Server, hp: HostPort) => new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(hp.port, hp.host, () => { server.off('error', reject); resolve(); });
    });
    for (const hp of config.listen) { const s = this.create(false, config); this.servers.push(s); await bind(s, hp); }
    for (const hp of config.tls.listen) { const s = this.create(true, config); this.servers.push(s); await bind(s, hp); }
  }

  /** Applies a reloaded config to the running servers (listen addresses need a restart). */
  reconfigure(config: Config): void {
    this.certs = loadCertificates(config);
    this.connections.cap = config.limits.maxConnectionsPerSource;
    for (const s of this.servers) this.configure(s, config);
  }

  /** Swaps the BlockList on every listener (the filter rebuilds it when entries expire). */
  setBlockList(list: net.BlockList): void {
    for (const s of this.servers) (s as Server & { blockList: net.BlockList }).blockList = list;
  }

  addresses(): { host: string; port: number; tls: boolean }[] {
    return this.servers.map((s) => { const a = s.address() as net.AddressInfo; return { host: a.address, port: a.port, tls: s instanceof https.Server }; });
  }

  /** Stops accepting, lets in-flight requests finish for up to drainMs, then cuts what is left. */
  async close(drainMs: number): Promise<void> {
    const closed = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const s of this.servers) s.closeIdleConnections();
    const t = setTimeout(() => { for (const s of this.servers) s.closeAllConnections(); }, drainMs);
    // Keep-alive connections that finish a request while draining are closed at once.
    const idle = setInterval(() => { for (const s of this.servers) s.closeIdleConnections(); }, 100);
    await closed;
    clearTimeout(t);
    clearInterval(idle);
  }
}
