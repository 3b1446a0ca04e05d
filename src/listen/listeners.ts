// The listening sockets: plain HTTP and HTTPS (certificate chosen by SNI).
// Every listener shares the filter's BlockList, so a banned source is refused
// at accept, before any HTTP parsing or TLS handshake.
//
// A TLS listener is a plain TCP server in front of an https.Server that never
// listens itself: at accept the connection is counted against its source and
// given a handshake deadline; when some domain is passthrough, the ClientHello
// is read (not answered) to learn its SNI, and the connection is either
// spliced undecrypted to that domain's upstreams or, with the bytes read put
// back, handed to the https.Server to be terminated.
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import tls from 'node:tls';
import net from 'node:net';
import crypto from 'node:crypto';
import type { Config, DomainConfig, HostPort } from '../config/schema.ts';
import { afterAnswers, type Pipeline } from '../pipeline/pipeline.ts';
import { adoptConnectionInfo, connectionInfo, leftMidAnswer, SourceConnections } from './connections.ts';
import { TOO_MANY_RECORDS } from './sni.ts';
import { peekClientHello } from './hello-peek.ts';
import { passthroughHosts, splice, PASSTHROUGH_IDLE_MS, type PassthroughEvent } from './passthrough.ts';
import { Tunnels } from '../upstream/tunnel.ts';
import { asHttp1Head, asHttp1Reply, refuseConnect } from './h2.ts';
import { H2Sessions, H2_BUDGET } from './h2-guard.ts';
import { endWith, rawResponse } from '../respond/reply.ts';
import { awaitContinue } from '../http/expect-continue.ts';
import { answerClientError } from './client-errors.ts';
import { certFiles, defaultCertificate, loadCertificates, SESSION_ID_CONTEXT, sniLookup } from './certs.ts';

export { loadCertificates };

type TlsServer = https.Server | http2.Http2SecureServer;
type Server = http.Server | TlsServer;
/** The node:http settings an Http2SecureServer with allowHTTP1 also honours for its HTTP/1.1 connections. */
type Http1Settings = { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number; maxHeadersCount: number; blockList: net.BlockList; httpAllowHalfOpen: boolean };

const DEADLINE = Symbol('scrubber.handshakeDeadline');
type Raw = net.Socket & { [DEADLINE]?: NodeJS.Timeout };
/** What a passthrough connection learns of the connection it rides on (tls.TLSSocket keeps the raw socket here). */
type Wrapped = net.Socket & { _parent?: Raw };

const H2_MAX_STREAMS = 100, H2_HEADER_PAIRS = 2000; // streams per HTTP/2 connection at most (Node's: unbounded); header fields
/** What an HTTP/2 connection may have in flight: no more than its source may (limits.maxInflightPerSource). A browser
 *  sends a page's every image at once and holds back what SETTINGS_MAX_CONCURRENT_STREAMS does not allow: told 100,
 *  its requests past the cap were refused (503/429) with the origin idle, and counted against it. */
const h2Streams = (c: Config): number => (c.limits.maxInflightPerSource > 0 ? Math.min(H2_MAX_STREAMS, c.limits.maxInflightPerSource) : H2_MAX_STREAMS);

export class Listeners {
  /** The HTTP servers: plain ones listen; the https ones are fed by the TLS fronts. */
  readonly servers: Server[] = [];
  /** The TCP listeners of the TLS ports. */
  readonly fronts: net.Server[] = [];
  readonly connections: SourceConnections;
  /** Passthrough connections, spliced (closed at the end of a drain). */
  readonly tunnels = new Tunnels();
  /** Idle time after which a passthrough connection is closed (a property, so that tests can shorten it). */
  passthroughIdleMs = PASSTHROUGH_IDLE_MS;
  certs = new Map<string, tls.SecureContext>();
  /** Told of every passthrough connection's connect outcome, and of its end (for statistics and attack mode); set by the app. */
  onPassthrough: ((e: PassthroughEvent) => void) | null = null;
  /** Open HTTP/2 sessions, guarded against abuse (h2-guard.ts) and told to go away on close. */
  readonly h2 = new H2Sessions({
    idleTimeoutMs: () => this.config.limits.idleTimeoutMs,
    report: (source, kind) => this.pipeline.filter.onClientError?.(source, kind),
  });

  private readonly pipeline: Pipeline;
  private config: Config;
  private passthrough: Map<string, DomainConfig>;
  /** TLS connections accepted whose handshake (or ClientHello, for passthrough) is not finished. */
  private readonly handshaking = new Set<net.Socket>();
  /** Session ticket keys: this process's own until setTicketKeys() gives the proxy's (ticket-keys.ts); kept across
   *  reloads so that resumption survives them. */
  private ticketKeys: Buffer = crypto.randomBytes(48);
  /** Connections handed over by the primary (worker process): the servers never accepted them, so drain counts here. */
  private readonly adopted = new Set<net.Socket>();

  constructor(pipeline: Pipeline, config: Config) {
    this.pipeline = pipeline;
    this.config = config;
    this.connections = new SourceConnections(config.limits.maxConnectionsPerSource, (source) => pipeline.detector.shared.behind(source));
    this.certs = loadCertificates(config);
    this.passthrough = passthroughHosts(config);
  }

  private configure(server: Server, config: Config): void {
    const l = config.limits;
    const s = server as unknown as Http1Settings;
    s.blockList = this.pipeline.filter.blockList;
    s.headersTimeout = l.headerTimeoutMs;
    s.requestTimeout = l.requestTimeoutMs;
    s.keepAliveTimeout = l.idleTimeoutMs;
    // One more than the limit, so that "too many" is seen instead of silently cut.
    s.maxHeadersCount = l.maxHeaderCount + 1;
    // A client that sends its requests and then shuts down its sending side (`nc -N`, socket.end(data)) still reads:
    // what it asked before its FIN is answered, then the connection closes (HAProxy's default). Node's own default
    // aborts every request of the connection on the FIN, so the client got nothing. One whose request still waits for
    // its turn in a saturated queue is dropped all the same (RequestFlow.onGone): it may have given up.
    s.httpAllowHalfOpen = true;
  }

  private create(tlsServer: boolean, config: Config): Server {
    const opts: http.ServerOptions = {
      maxHeaderSize: config.limits.maxHeaderBytes,
      // The pipeline answers a missing Host itself, with its own page and X-Scrubber.
      requireHostHeader: false,
      connectionsCheckingInterval: 500,
      noDelay: true,
    };
    const tlsOpts: tls.TlsOptions = {
      ...defaultCertificate(config),
      SNICallback: (name, cb) => cb(null, sniLookup(() => this.certs, name)),
      ticketKeys: this.ticketKeys,
      sessionIdContext: SESSION_ID_CONTEXT,
      // Our own deadline (tls.handshakeTimeoutMs, from accept) acts first; this is a backstop.
      handshakeTimeout: 2 * config.tls.handshakeTimeoutMs + 1000,
    };
    let server: Server;
    if (!tlsServer) server = http.createServer(opts);
    else if (!config.tls.http2) server = https.createServer({ ...opts, ...tlsOpts, ALPNProtocols: ['http/1.1'] });
    else {
      // h2 and http/1.1 by ALPN; the HTTP/1.1 connections get node:http's own handling (and the options above).
      server = http2.createSecureServer({
        ...opts, ...tlsOpts, allowHTTP1: true,
        settings: { maxConcurrentStreams: h2Streams(config), maxHeaderListSize: config.limits.maxHeaderBytes },
        // A backstop only (fixed at creation): the flow counts header lines as HTTP/1.1 has them (the cookie crumbs a
        // browser may send one per field joined in one line) and answers 431 past limits.maxHeaderCount, as reloaded.
        maxHeaderListPairs: Math.max(H2_HEADER_PAIRS, 4 * config.limits.maxHeaderCount), maxSessionRejectedStreams: H2_BUDGET.refusedStreams,
      } as http2.SecureServerOptions);
      // The source was counted at accept on the raw socket (the TLS socket has not adopted it yet).
      server.on('session', (session: http2.ServerHttp2Session) => this.h2.add(session, connectionInfo((session.socket as Wrapped)._parent ?? session.socket).source));
    }
    this.configure(server, config);
    if (tlsServer) server.on('secureConnection', (socket: tls.TLSSocket) => this.onSecure(socket));
    else server.on('connection', (socket: net.Socket) => this.onConnection(socket));
    if (tlsServer && config.tls.http2) {
      server.on('request', (req: http2.Http2ServerRequest | http.IncomingMessage, res: http2.Http2ServerResponse | http.ServerResponse) => {
        if (req.httpVersionMajor === 2) this.pipeline.handle(asHttp1Head(req as http2.Http2ServerRequest), asHttp1Reply(res as http2.Http2ServerResponse));
        else this.pipeline.handle(req as http.IncomingMessage, res as http.ServerResponse);
      });
    } else server.on('request', this.pipeline.handle);
    // Expect: 100-continue: the 100 waits until the flow reads the body, so that a refused request is not uploaded first.
    server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => { awaitContinue(req, res); server.emit('request', req, res); });
    // Any other expectation: forwarded without it (the header is dropped: upstream/headers.ts), as nginx and HAProxy do;
    // Node's own answer was a bare 417 without X-Scrubber.
    server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => server.emit('request', req, res));
    server.on('upgrade', this.pipeline.handleUpgrade);
    server.on('connect', (_req, socket) => socket instanceof http2.Http2ServerResponse ? refuseConnect(socket) : afterAnswers(socket, () => endWith(socket, rawResponse(405, 'method-not-allowed'))));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => answerClientError(err, socket, this.pipeline.filter));
    return server;
  }

  /** Accept-time admission, for plain and TLS connections alike: per-source cap, then the filter. */
  private admit(socket: net.Socket): boolean {
    const info = connectionInfo(socket);
    socket.on('error', () => {});
    if (!this.connections.admit(socket, info.source) || !this.pipeline.filter.onConnection(socket, info.source)) { socket.destroy(); return false; }
    socket.on('end', leftMidAnswer);
    return true;
  }

  private onConnection(socket: net.Socket): void { this.admit(socket); }

  private createFront(server: TlsServer): net.Server {
    // allowHalfOpen: the TLS socket on top decides what a client's FIN means (see configure), not the raw one.
    const front = net.createServer({ noDelay: true, allowHalfOpen: true });
    (front as net.Server & { blockList: net.BlockList }).blockList = this.pipeline.filter.blockList;
    front.on('connection', (raw: Raw) => this.onTlsAccept(raw, server));
    return front;
  }

  private onTlsAccept(raw: Raw, server: TlsServer): void {
    connectionInfo(raw).tls = true;
    if (!this.admit(raw)) return;
    this.handshaking.add(raw);
    raw.once('close', () => { this.handshaking.delete(raw); if (raw[DEADLINE]) clearTimeout(raw[DEADLINE]); });
    const ms = this.config.tls.handshakeTimeoutMs;
    if (ms > 0) {
      raw[DEADLINE] = setTimeout(() => {
        // A handshake that never finishes costs the proxy a socket and a timer: the source is told off as slow.
        this.pipeline.filter.onClientError?.(connectionInfo(raw).source, 'HPE_HEADERS_TIMEOUT');
        raw.destroy();
      }, ms);
    }
    if (this.passthrough.size === 0) { server.emit('connection', raw); return; }
    peekClientHello(raw, (seen, r) => {
      const domain = r.kind === 'done' && r.sni !== null ? this.passthrough.get(r.sni.replace(/\.$/, '')) : undefined;
      if (domain) this.pass(raw, seen, domain);
      else if (r.kind === 'error' && r.reason === TOO_MANY_RECORDS) {
        // Only a client out to cost the proxy time splits its hello so (sni.ts): closed, and counted as malformed.
        this.pipeline.filter.onClientError?.(connectionInfo(raw).source, 'HPE_TLS_HELLO_RECORDS');
        raw.destroy();
      } else {
        // Not ours to pass: the TLS server reads the ClientHello again (it answers garbage itself).
        raw.unshift(seen);
        server.emit('connection', raw);
      }
    });
  }

  private pass(raw: Raw, head: Buffer, domain: DomainConfig): void {
    const group = this.pipeline.upstreams.groups.get(domain.name);
    if (!group) { raw.destroy(); return; }
    // The ClientHello is in: the client did its part; connect time is the upstream's (connectTimeoutMs, attempts).
    if (raw[DEADLINE]) clearTimeout(raw[DEADLINE]);
    this.handshaking.delete(raw);
    const { source, client } = connectionInfo(raw);
    splice(raw, {
      domain, group, upstream: this.config.upstream, head, source, client, idleTimeoutMs: this.passthroughIdleMs,
      onEvent: (e) => this.onPassthrough?.(e),
    }, this.tunnels);
  }

  private onSecure(socket: tls.TLSSocket): void {
    const raw = (socket as Wrapped)._parent;
    if (!raw) { this.admit(socket); return; }
    if (raw[DEADLINE]) clearTimeout(raw[DEADLINE]);
    this.handshaking.delete(raw);
    adoptConnectionInfo(socket, raw);
    socket.on('error', () => {});
    socket.on('end', leftMidAnswer);
  }

  async listen(config: Config): Promise<void> {
    const bind = (server: net.Server, hp: HostPort) => new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(hp.port, hp.host, () => { server.off('error', reject); resolve(); });
    });
    for (const hp of config.listen) { const s = this.create(false, config); this.servers.push(s); await bind(s, hp); }
    for (const hp of config.tls.listen) {
      const s = this.create(true, config) as TlsServer;
      this.servers.push(s);
      const front = this.createFront(s);
      this.fronts.push(front);
      await bind(front, hp);
      // node:http starts its connection tracking (headersTimeout, requestTimeout, closeIdleConnections) on
      // 'listening'; this server never listens itself, its front does.
      s.emit('listening');
    }
  }

  /** A worker process: the same servers, not bound; the primary accepts and hands each connection over (accept()). */
  prepare(config: Config): void {
    for (const _ of config.listen) this.servers.push(this.create(false, config));
    for (const _ of config.tls.listen) {
      const s = this.create(true, config) as TlsServer;
      this.servers.push(s);
      this.fronts.push(this.createFront(s));
    }
    // Timers of node:http (headersTimeout, requestTimeout) start on 'listening'; these servers never listen.
    for (const s of this.servers) s.emit('listening');
  }

  /** A connection accepted by the primary for listener `index` (plain listeners first, then TLS ones). */
  accept(index: number, socket: net.Socket): void {
    const plain = this.servers.length - this.fronts.length;
    const target: net.Server | undefined = index < plain ? this.servers[index] : this.fronts[index - plain];
    if (!target) { socket.destroy(); return; }
    socket.setNoDelay(true);
    // Node makes the handed-over socket with allowHalfOpen off, which ends our side at the client's FIN, before the
    // answers it is owed (see configure): as a socket the listener accepted itself.
    socket.allowHalfOpen = true;
    this.adopted.add(socket);
    socket.once('close', () => this.adopted.delete(socket));
    target.emit('connection', socket);
  }

  /** Applies a reloaded config to the running servers (listen addresses need a restart). `files`: its certificates,
   *  read by a reload before anything changes (certFiles), so that nothing here fails half way. */
  reconfigure(config: Config, { certs, fallback } = certFiles(config)): void {
    this.config = config;
    this.certs = certs;
    this.passthrough = passthroughHosts(config);
    this.connections.cap = config.limits.maxConnectionsPerSource;
    for (const s of this.servers) this.configure(s, config);
    // New sessions only: one open keeps what it was told (a peer is not asked to shrink what it may have in flight).
    for (const s of this.servers) (s as Partial<http2.Http2SecureServer>).updateSettings?.({ maxConcurrentStreams: h2Streams(config), maxHeaderListSize: config.limits.maxHeaderBytes });
    if (fallback.cert) for (const s of this.servers) if (s instanceof tls.Server) s.setSecureContext({ ...fallback, ticketKeys: this.ticketKeys, sessionIdContext: SESSION_ID_CONTEXT });
  }

  /** Puts a session ticket key in use on every TLS listener (and on those made later). */
  setTicketKeys(key: Buffer): void {
    this.ticketKeys = key;
    for (const s of this.servers) if (s instanceof tls.Server) s.setTicketKeys(key);
  }

  addresses(): { host: string; port: number; tls: boolean }[] {
    const plain = this.servers.filter((s) => s instanceof http.Server && !(s instanceof https.Server));
    return [...plain, ...this.fronts].map((s) => { const a = s.address() as net.AddressInfo; return { host: a.address, port: a.port, tls: !plain.includes(s as Server) }; });
  }

  /** Stops accepting, lets in-flight requests finish for up to drainMs, then cuts what is left. */
  async close(drainMs: number): Promise<void> {
    const listening = [...this.servers.filter((s) => s.listening), ...this.fronts];
    const closed = Promise.all(listening.map((s) => new Promise<void>((r) => s.close(() => r()))));
    // The https servers never listened: close() only stops their timers and idle connections.
    for (const s of this.servers) if (!s.listening) s.close(() => {});
    // Half-done handshakes carry no request to finish.
    for (const s of this.handshaking) s.destroy();
    for (const s of this.servers) (s as Partial<http.Server>).closeIdleConnections?.();
    this.h2.closeAll();
    const t = setTimeout(() => {
      // Http2SecureServer has no closeAllConnections: node:http's own, on its HTTP/1.1 (ALPN) connections.
      for (const s of this.servers) http.Server.prototype.closeAllConnections.call(s as http.Server);
      this.h2.destroyAll();
      this.tunnels.closeAll();
    }, drainMs);
    // Keep-alive connections that finish a request while draining are closed at once.
    const idle = setInterval(() => { for (const s of this.servers) (s as Partial<http.Server>).closeIdleConnections?.(); }, 100);
    await closed;
    // Handed-over connections are no server's own: close() did not wait for them.
    const deadline = Date.now() + drainMs;
    while (this.adopted.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of this.adopted) s.destroy();
    clearTimeout(t);
    clearInterval(idle);
  }
}
