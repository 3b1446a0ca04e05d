// WebSocket (and other Upgrade) requests: http-proxy-3 pipes the two sockets
// once the upstream agrees. Its features pay here; the hot path stays on undici.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import type { Pipeline } from './pipeline.ts';
import { route } from '../proxy/router.ts';
import { checkRequest } from './hygiene.ts';
import { connectionInfo } from './connections.ts';

const proxy = createProxyServer({ ws: true, xfwd: true });
proxy.on('error', (_err, _req, res) => {
  // res is the client socket for ws errors.
  const s = res as unknown as Duplex;
  if (s && !s.destroyed) { s.end('HTTP/1.1 502 Bad Gateway\r\nx-scrubber: connect-refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'); }
});

export function handleUpgrade(pipeline: Pipeline, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const { config, routes } = pipeline.runtime;
  const refuse = (status: string, reason: string) => socket.end(`HTTP/1.1 ${status}\r\nx-scrubber: ${reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
  const problem = checkRequest(req.method ?? 'GET', req.url ?? '/', req.rawHeaders, config.limits.maxHeaderCount);
  if (problem) return void refuse(`${problem.status} Bad Request`, problem.reason);
  const r = route(routes, req.headers.host);
  if (!r.ok) return void refuse(`${r.status} ${r.status === 421 ? 'Misdirected Request' : 'Bad Request'}`, r.reason);
  const conn = connectionInfo(req.socket);
  if (!pipeline.filter.admit(req, null, { source: conn.source, client: conn.client, domain: r.domain, newConnection: conn.requests === 0 })) return void socket.destroy();
  if (r.domain.maintenance.enabled) return void refuse('503 Service Unavailable', 'maintenance');
  const up = pipeline.upstreams.groups.get(r.domain.name)!.order()[0];
  socket.on('error', () => {});
  proxy.ws(req, socket, head, { target: `${up.tls ? 'https' : 'http'}://${up.address}`, secure: config.upstream.rejectUnauthorized });
}
