// A plain http-proxy-3 reverse proxy, as its README shows it, with a
// keep-alive agent to the upstream (without one it would open a connection
// per request, which would be an unfair comparison).
// usage: node bench/servers/http-proxy3.ts PORT UPSTREAM_PORT
import http from 'node:http';
import { createProxyServer } from 'http-proxy-3';

const [port, upstreamPort] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = createProxyServer({ target: `http://127.0.0.1:${upstreamPort}`, agent, xfwd: true });
proxy.on('error', (_err, _req, res) => {
  if (res instanceof http.ServerResponse && !res.headersSent) { res.writeHead(502); res.end(); } else (res as { destroy?: () => void }).destroy?.();
});
const server = http.createServer((req, res) => proxy.web(req, res));
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => { server.closeAllConnections(); server.close(() => process.exit(0)); });
