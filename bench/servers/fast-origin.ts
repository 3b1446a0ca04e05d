// The throughput origin: node:http answering every request at once with a
// small fixed body, so that what is measured is the proxy in front of it.
// usage: node bench/servers/fast-origin.ts PORT
import http from 'node:http';

const port = Number(process.argv[2]);
const body = Buffer.from('<!doctype html><html><head><title>bench</title></head><body><p>Hello from the bench origin.</p></body></html>\n');
const server = http.createServer((req, res) => {
  // Request bodies (none in the bench) are drained so keep-alive continues.
  req.resume();
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => { server.closeAllConnections(); server.close(() => process.exit(0)); });
