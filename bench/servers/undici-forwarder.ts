// The floor of what forwarding costs in Node: node:http in front, one undici
// Pool per upstream, Pool.dispatch with a handler (one method per lifecycle
// event, explicit backpressure), hop-by-hop headers dropped, X-Forwarded-For
// appended. No routing, no filtering, no limits, no statistics.
// usage: node bench/servers/undici-forwarder.ts PORT UPSTREAM_PORT [reuse]
// `reuse`: listens with SO_REUSEPORT, so that several of these processes share the port (the kernel spreads the
// connections): the floor with more than one process.
import http from 'node:http';
import { Pool, type Dispatcher } from 'undici';

const [port, upstreamPort] = process.argv.slice(2).map(Number);
const reusePort = process.argv[4] === 'reuse';
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 256, pipelining: 1, allowH2: false, keepAliveTimeout: 4000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

function requestHeaders(req: http.IncomingMessage): string[] {
  const raw = req.rawHeaders, out: string[] = [];
  let xff = '';
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    if (HOP.has(k)) continue;
    if (k === 'x-forwarded-for') { xff = xff ? `${xff}, ${raw[i + 1]}` : raw[i + 1]; continue; }
    out.push(raw[i], raw[i + 1]);
  }
  const client = req.socket.remoteAddress ?? '';
  out.push('x-forwarded-for', xff ? `${xff}, ${client}` : client);
  return out;
}

class Forward implements Dispatcher.DispatchHandler {
  res: http.ServerResponse;
  constructor(res: http.ServerResponse) { this.res = res; }
  onRequestStart(): void {}
  onResponseStart(controller: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    const h: Record<string, string | string[]> = {};
    for (const k in headers) if (!HOP.has(k) && headers[k] !== undefined) h[k] = headers[k]!;
    this.res.writeHead(status, h);
  }
  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) { controller.pause(); this.res.once('drain', () => controller.resume()); }
  }
  onResponseEnd(): void { this.res.end(); }
  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    if (this.res.headersSent) { this.res.destroy(); return; }
    this.res.writeHead(502, { 'content-type': 'text/plain' });
    this.res.end(`bad gateway: ${err.message}\n`);
  }
}

const server = http.createServer((req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.dispatch({ path: req.url ?? '/', method: req.method ?? 'GET', headers: requestHeaders(req), body: hasBody ? req : null }, new Forward(res));
});
server.keepAliveTimeout = 60_000;
server.listen({ port, host: '127.0.0.1', reusePort });
process.on('SIGTERM', () => { server.closeAllConnections(); server.close(() => pool.close().then(() => process.exit(0))); });
