// A baseline for bench/h2-vs-h1.ts: node:http2 (with HTTP/1.1 by ALPN, as
// Scrubber's TLS listener) answering every request itself with the bench
// origin's body, no proxying. What it costs is Node's own TLS and HTTP/2
// compatibility layer, which Scrubber pays too. noDelay as Scrubber's
// listener has it (without it Nagle's algorithm stalls small HTTP/2 frames).
// usage: node bench/servers/node-tls-hello.ts PORT CERT KEY
import http2 from 'node:http2';
import fs from 'node:fs';

const [port, cert, key] = process.argv.slice(2);
const body = Buffer.from('<!doctype html><html><head><title>bench</title></head><body><p>Hello from the bench origin.</p></body></html>\n');
const server = http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), allowHTTP1: true, noDelay: true }, (req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': body.length });
  res.end(body);
});
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => { server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 500).unref(); });
