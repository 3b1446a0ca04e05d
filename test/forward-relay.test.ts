// What is relayed between client and upstream in three cases a raw `net`
// upstream sets up byte for byte, with a real proxy in-process. Each failed on
// the code before 2026-11-29:
// - an Expect other than 100-continue got Node's own bare 417 (no
//   X-Scrubber, nothing forwarded): now forwarded without it, as nginx does;
// - an upstream answer with a transfer coding other than chunked ("gzip,
//   chunked") reached the client as a plain body (undici undoes the chunking
//   only): now a 502, as nginx answers it;
// - an upgrade's answers (a declined one, and the 101) were relayed with the
//   headers their Connection names and without Via;
// - a WebSocket upstream that half-closed first had the proxy's side toward
//   it ended at once (Node's client socket), so the client's later bytes were
//   lost and the tunnel destroyed.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import http from 'node:http';
import zlib from 'node:zlib';
import { once } from 'node:events';
import { startProxy, domain, type Proxy } from './helpers/servers.ts';

let proxy: Proxy;
let upstream: net.Server;
/** Request heads the upstream received (Latin-1, byte for byte). */
const seen: string[] = [];
/** What the upstream answers to each request head. */
let answer: (head: string, s: net.Socket) => void = () => {};

beforeAll(async () => {
  upstream = net.createServer((s) => {
    let buf = '';
    s.on('error', () => {});
    s.on('data', (d) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      const head = buf.slice(0, i + 4);
      buf = '';
      seen.push(head);
      answer(head, s);
    });
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const port = (upstream.address() as net.AddressInfo).port;
  proxy = await startProxy({ filter: { mode: 'off' }, domains: [domain('site.test', [`127.0.0.1:${port}`])] });
});
afterAll(async () => { await proxy.close(); await new Promise((r) => upstream.close(r)); });
beforeEach(() => { seen.length = 0; answer = () => {}; });

/** Raw bytes to the proxy; everything it sends back (Latin-1) until it closes or `timeoutMs`. */
function raw(data: string, timeoutMs = 1500): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const c = net.connect(proxy.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const t = setTimeout(() => { c.destroy(); resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: false }); }, timeoutMs);
    c.on('connect', () => c.write(Buffer.from(data, 'latin1')));
    c.on('data', (d) => chunks.push(d));
    c.on('error', () => {});
    c.on('close', () => { clearTimeout(t); resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: true }); });
  });
}

/** Status and lower-cased headers of the first response in `text`. */
function firstHead(text: string): { status: number; headers: Record<string, string[]> } {
  const end = text.indexOf('\r\n\r\n');
  const lines = text.slice(0, end < 0 ? text.length : end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string[]> = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) (headers[l.slice(0, c).trim().toLowerCase()] ??= []).push(l.slice(c + 1).trim());
  }
  return { status, headers };
}

describe('relayed between client and upstream', () => {
  it('an Expect other than 100-continue is forwarded without it, not answered with a bare 417', async () => {
    answer = (_h, s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    const r = await raw('POST /form HTTP/1.1\r\nHost: site.test\r\nExpect: x-custom\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello');
    const { status } = firstHead(r.text);
    expect({ status, forwarded: seen.length, expectSent: /\r\nexpect:/i.test(seen[0] ?? '') }).toEqual({ status: 200, forwarded: 1, expectSent: false });
  });

  it('an upstream answer with a transfer coding other than chunked is a 502, not relayed as if its body were plain', async () => {
    const gz = zlib.gzipSync('hello world');
    answer = (_h, s) => s.write(Buffer.concat([
      Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${gz.length.toString(16)}\r\n`),
      gz, Buffer.from('\r\n0\r\n\r\n'),
    ]));
    const res = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: proxy.port, path: '/file', headers: { host: 'site.test' }, agent: false }, (m) => {
        const chunks: Buffer[] = [];
        m.on('data', (c) => chunks.push(c));
        m.on('end', () => resolve({ status: m.statusCode ?? 0, headers: m.headers, body: Buffer.concat(chunks) }));
        m.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(3000, () => req.destroy(new Error('timeout')));
    });
    expect({ status: res.status, by: res.headers['x-scrubber'] ?? null }).toEqual({ status: 502, by: 'upstream-error' });
  });

  it('a declined upgrade answer gets the same header rules as any response: Connection-named headers removed, Via added', async () => {
    answer = (_h, s) => s.end('HTTP/1.1 403 Forbidden\r\nConnection: close, X-Internal\r\nX-Internal: secret\r\nContent-Length: 2\r\n\r\nno');
    const r = await raw('GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', 2000);
    const { status, headers } = firstHead(r.text);
    expect(status).toBe(403);
    expect({ 'x-internal': headers['x-internal'] ?? null, via: headers.via ?? null }).toEqual({ 'x-internal': null, via: ['1.1 scrubber'] });
  });

  it('an upgrade\'s 101 keeps Upgrade, loses what its Connection names, and gets Via', async () => {
    answer = (_h, s) => s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Internal\r\nX-Internal: secret\r\n' +
      'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
    const r = await raw('GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', 800);
    const { status, headers } = firstHead(r.text);
    expect({ status, upgrade: headers.upgrade, connection: headers.connection, accept: headers['sec-websocket-accept'], internal: headers['x-internal'] ?? null, via: headers.via })
      .toEqual({ status: 101, upgrade: ['websocket'], connection: ['upgrade'], accept: ['s3pPLMBiTxaQ9kYGzzhZRbK+xOo='], internal: null, via: ['1.1 scrubber'] });
  });

  it('a WebSocket upstream that half-closes first still gets what the client sends after its FIN', async () => {
    const after: string[] = [];
    answer = (_h, s) => {
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nDOWN');
      s.end(); // its FIN; it still reads
      s.removeAllListeners('data');
      s.on('data', (d) => after.push(d.toString('latin1')));
    };
    // allowHalfOpen: the client, too, keeps sending after the upstream's FIN reached it.
    const c = net.connect({ port: proxy.port, host: '127.0.0.1', allowHalfOpen: true });
    c.on('error', () => {});
    let text = '';
    c.on('data', (d) => { text += d.toString('latin1'); });
    await once(c, 'connect');
    c.write('GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    for (let i = 0; i < 100 && !text.endsWith('DOWN'); i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100)); // the upstream's FIN has reached the client by now
    c.end('UP-AFTER-FIN');
    for (let i = 0; i < 100 && after.join('') !== 'UP-AFTER-FIN'; i++) await new Promise((r) => setTimeout(r, 10));
    c.destroy();
    expect({ down: text.endsWith('DOWN'), up: after.join('') }).toEqual({ down: true, up: 'UP-AFTER-FIN' });
  });
});

