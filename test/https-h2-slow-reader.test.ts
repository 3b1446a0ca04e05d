// HTTP/2 slow readers and HTTP/1.1 habits on HTTP/2 responses.
// - A client whose flow-control window never opens (SETTINGS_INITIAL_WINDOW_SIZE
//   0, never a WINDOW_UPDATE) takes no byte of its response: the send deadline
//   of HTTP/1.1 (src/upstream/slow-client.ts) cuts the stream, and the upstream
//   request with it, so the stream cannot hold an upstream connection for ever.
//   forward() runs on its own here with a short deadline; the proxy uses the
//   same forward() for HTTP/2 streams (with the 60 s default).
// - A reason phrase and "Connection: close" (what the pipeline sends on
//   HTTP/1.1) neither throw nor warn on HTTP/2.
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import fs from 'node:fs';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, domain, until, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';
import { loadConfigObject } from '../src/config/load.ts';
import { Upstreams } from '../src/upstream/upstreams.ts';
import { forward, type ForwardOutcome } from '../src/upstream/forward.ts';
import { toUpstreamHeaders } from '../src/upstream/headers.ts';
import { asHttp1Head, asHttp1Reply } from '../src/listen/h2.ts';

// Any warning in this file's process fails it: node:http2 warns once per process, and each test file runs in a fresh one.
const warnings: string[] = [];
process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`));

let pki: TestPki;
let origin: Origin;
/** Responses the origin could not finish (its client, the proxy, went away). */
const cut = { n: 0 };
beforeAll(async () => {
  pki = makePki();
  const o = await startOrigin((req, res) => {
    const m = /^\/big\/(\d+)/.exec(req.url ?? '');
    if (m) {
      const body = Buffer.alloc(Number(m[1]) * 1024, 'x');
      res.on('close', () => { if (!res.writableFinished) cut.n++; });
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
      res.end(body);
      return;
    }
    // An HTTP/1.1 origin's habits: its own reason phrase, Connection and Keep-Alive headers.
    res.statusMessage = 'Very Fine';
    res.writeHead(200, { connection: 'close', 'keep-alive': 'timeout=5', 'content-type': 'text/plain' });
    res.end('habits');
  });
  origin = o;
});
afterAll(() => origin.close());

function h2connect(port: number, settings?: http2.Settings): http2.ClientHttp2Session {
  const s = http2.connect(`https://a.test:${port}`, { ca: fs.readFileSync(pki.ca), host: '127.0.0.1', servername: 'a.test', settings } as http2.SecureClientSessionOptions);
  s.on('error', () => {});
  return s;
}

describe('a stream whose window never opens', () => {
  /** Short for a test, long enough that a loaded machine does not make a reading client look stalled. */
  const DEADLINE = 800;
  let server: http2.Http2SecureServer;
  let upstreams: Upstreams;
  let port: number;
  const outcomes: ForwardOutcome[] = [];
  beforeAll(async () => {
    const r = loadConfigObject({ listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, domains: [domain('a.test', [origin.address])] }, {});
    if (!r.ok) throw new Error(r.problems.join('\n'));
    upstreams = new Upstreams();
    upstreams.apply(r.config);
    const a = pki.leaf('a.test');
    server = http2.createSecureServer({ cert: fs.readFileSync(a.cert), key: fs.readFileSync(a.key) }, (q, s) => {
      const req = asHttp1Head(q);
      forward({
        req, res: asHttp1Reply(s), path: req.url ?? '/', method: 'GET', body: null,
        headers: toUpstreamHeaders(req.rawHeaders, { client: '127.0.0.1', proto: 'https', host: 'a.test' }),
        responseTimeoutMs: 5000, connectAttempts: 1, sendTimeoutMs: DEADLINE,
      }, upstreams.groups.get('a.test')!, (o) => outcomes.push(o));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => { server.close(); await upstreams.close(); });

  it('is cut after the send deadline, and the upstream request with it', async () => {
    const s = h2connect(port, { initialWindowSize: 0 });
    const r = s.request({ ':path': '/big/16384' });
    r.on('error', () => {});
    let status = 0;
    r.on('response', (h) => { status = Number(h[':status']); });
    const reset = new Promise<number>((res) => r.on('close', () => res(r.rstCode ?? -1)));
    const t0 = performance.now();
    expect(await until(() => outcomes.length === 1, DEADLINE + 5000)).toBe(true);
    const took = performance.now() - t0;
    expect(outcomes[0]).toMatchObject({ status: 200, slowReader: true, clientAborted: true });
    expect(status).toBe(200);
    expect(took).toBeGreaterThanOrEqual(DEADLINE);
    expect(took).toBeLessThan(DEADLINE + 3000);
    // The stream is reset as an error (not NO_ERROR, which reads as a clean end); the upstream's response was
    // abandoned before its end.
    expect(await reset).toBe(http2.constants.NGHTTP2_INTERNAL_ERROR);
    expect(await until(() => cut.n === 1, 2000)).toBe(true);
    s.destroy();
  });

  it('a client that opens its window, however late, gets the whole response', async () => {
    outcomes.length = 0;
    const s = h2connect(port);
    const r = s.request({ ':path': '/big/1024' });
    let got = 0;
    // About 800 KiB/s: each 64 KiB chunk is taken well within the deadline, the whole MiB takes longer.
    r.on('data', (c: Buffer) => { got += c.length; r.pause(); setTimeout(() => r.resume(), 20); });
    await once(r, 'end');
    expect(got).toBe(1024 * 1024);
    expect(outcomes[0]).toMatchObject({ status: 200, slowReader: false });
    expect(r.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    s.destroy();
  });
});

describe('a slow request body on HTTP/2 (slow POST)', () => {
  it('a stream that declares a body and sends none is cut by the minimum body rate (408), counted as slow', async () => {
    const a = pki.leaf('a.test');
    const proxy = await startProxy({
      tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }] },
      limits: { minBodyRateBytesPerSec: 1024, minBodyRateGraceMs: 300 },
      domains: [domain('a.test', [origin.address])],
    });
    const seen: string[] = [];
    proxy.app.pipeline.onObserve((o) => { if (o.proxyReason) seen.push(o.proxyReason); });
    const port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
    const s = h2connect(port);
    for (const headers of [{ 'content-length': '100000' }, {}]) {
      // With and without a declared length (then the body is "chunked" to the pipeline); a byte, then nothing.
      const r = s.request({ ':method': 'POST', ':path': '/', ...headers }, { endStream: false });
      r.write('x');
      const t0 = performance.now();
      const [h] = await once(r, 'response') as [http2.IncomingHttpHeaders];
      r.resume();
      expect(h[':status']).toBe(408);
      expect(h['x-scrubber']).toBe('body-too-slow');
      expect(performance.now() - t0).toBeLessThan(5000);
      r.close();
    }
    expect(seen).toEqual(['body-too-slow', 'body-too-slow']);
    s.destroy();
    await proxy.close();
  });
});

describe('HTTP/1.1 habits on an HTTP/2 response', () => {
  let proxy: Proxy;
  let port: number;
  beforeAll(async () => {
    const a = pki.leaf('a.test');
    proxy = await startProxy({ tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }] }, limits: { maxBodyBytes: 100 }, domains: [domain('a.test', [origin.address])] });
    port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
  });
  afterAll(() => proxy.close());

  it('an upstream reason phrase, Connection and Keep-Alive headers: relayed without them, no warning', async () => {
    const s = h2connect(port);
    const r = s.request({ ':path': '/habits' });
    const [h] = await once(r, 'response') as [http2.IncomingHttpHeaders];
    let body = '';
    r.on('data', (c) => { body += c; });
    await once(r, 'end');
    expect(h[':status']).toBe(200);
    expect(h.connection).toBeUndefined();
    expect(h['keep-alive']).toBeUndefined();
    expect(body).toBe('habits');
    // A proxy answer that closes the connection on HTTP/1.1 (413): on HTTP/2 only the stream ends.
    const big = s.request({ ':method': 'POST', ':path': '/', 'content-length': '5000' });
    big.end('x'.repeat(5000));
    const [bh] = await once(big, 'response') as [http2.IncomingHttpHeaders];
    big.resume();
    expect(bh[':status']).toBe(413);
    expect(bh['x-scrubber']).toBe('body-too-large');
    // The session is still usable.
    const again = s.request({ ':path': '/habits' });
    const [ah] = await once(again, 'response') as [http2.IncomingHttpHeaders];
    again.resume();
    expect(ah[':status']).toBe(200);
    s.close();
    expect(warnings).toEqual([]);
  });

  it('the compat response takes a reason phrase and connection headers without a throw (keep-alive would throw ERR_HTTP2_INVALID_CONNECTION_HEADERS)', async () => {
    const a = pki.leaf('shim.test');
    const server = http2.createSecureServer({ cert: fs.readFileSync(a.cert), key: fs.readFileSync(a.key) }, (_q, s) => {
      const res = asHttp1Reply(s);
      res.statusMessage = 'Whatever';
      res.setHeader('Connection', 'close');
      res.writeHead(201, 'Created', { 'keep-alive': 'timeout=5', 'proxy-connection': 'x', 'x-kept': '1' } as http.OutgoingHttpHeaders);
      res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = http2.connect(`https://127.0.0.1:${(server.address() as net.AddressInfo).port}`, { ca: fs.readFileSync(pki.ca), servername: 'shim.test' } as http2.SecureClientSessionOptions);
    const r = c.request({ ':path': '/' });
    const [h] = await once(r, 'response') as [http2.IncomingHttpHeaders];
    r.resume();
    await once(r, 'end');
    c.close();
    server.close();
    expect(h[':status']).toBe(201);
    expect(h['x-kept']).toBe('1');
    expect(h['keep-alive']).toBeUndefined();
    expect(warnings).toEqual([]);
  });
});
