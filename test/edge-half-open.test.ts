// Connections the proxy answered and is done with must not be held half-open by
// a client that never closes its side. Each test runs a real proxy in-process in
// front of a real origin, with raw clients from 127/8, and is bounded in time.
// Each failed on the code before 2026-11-29:
//
// 1. HTTP/1.1 slowloris: a head not received within limits.headerTimeoutMs gets its 408 and "is closed" (README,
//    Request limits). The listener's clientError handler only end()s the socket (it sends the 408 and a FIN). A client
//    that ignores the FIN keeps the proxy's socket open (half-closed) for good. It still counts against the source's
//    connection cap, and the deadline holds nothing. Node's own default handler, nginx and HAProxy close the socket.
// 2. HTTP/2: a stream whose request body the proxy started reading, then refused (408 body-too-slow here; the same
//    goes for 413 on a chunked body, or a queue refusal after buffering), is answered but never reset. The client
//    keeps its half of the stream open, so the session always has an "open stream" and is never idle. The
//    idleTimeoutMs GOAWAY never comes, and one HEADERS frame holds the connection for ever. On HTTP/1.1 the same
//    answer closes the connection. The README says it "ends only its stream", and it does not end it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { startOrigin, startProxy, domain, until, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';
import { RawH2, T, FLAG, frame, getHeaders } from './helpers/h2-raw.ts';

let pki: TestPki;
let origin: Origin;
beforeAll(async () => {
  pki = makePki();
  origin = await startOrigin((req, res) => {
    const m = /^\/big\/(\d+)/.exec(req.url ?? '');
    const body = m ? Buffer.alloc(Number(m[1]), 'x') : Buffer.from('small');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
});
afterAll(() => origin.close());

const tlsPort = (p: Proxy) => p.app.listeners.addresses().find((x) => x.tls)!.port;

describe('HTTP/1.1 slowloris after its 408', () => {
  let proxy: Proxy;
  beforeAll(async () => { proxy = await startProxy({ limits: { headerTimeoutMs: 600, idleTimeoutMs: 500 }, domains: [domain('site.test', [origin.address])] }); });
  afterAll(() => proxy.close());

  it('a client that never finishes its head, and ignores the FIN after the 408, is not held open', async () => {
    const ip = '127.0.31.1';
    // allowHalfOpen: the client does not close its side when the proxy's FIN comes (what an attacker simply does).
    const s = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip, allowHalfOpen: true });
    s.on('error', () => {});
    let text = '';
    let ended = false;
    s.on('data', (c) => { text += c; });
    s.on('end', () => { ended = true; });
    await once(s, 'connect');
    s.write('GET / HTTP/1.1\r\nHost: site.test\r\n');
    expect(await until(() => ended, 4000)).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    // The proxy answered; it must let go of the connection now (nginx: at once, or after a bounded lingering close).
    await until(() => proxy.app.listeners.connections.count(ip) === 0, 3000);
    expect({ heldByProxy: proxy.app.listeners.connections.count(ip) }).toEqual({ heldByProxy: 0 });
    s.destroy();
  }, 15_000);
});

describe('HTTP/2 stream answered before its body ended', () => {
  let proxy: Proxy;
  beforeAll(async () => {
    const a = pki.leaf('site.test');
    proxy = await startProxy({
      tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['site.test'], ...a }] },
      limits: { idleTimeoutMs: 300, minBodyRateGraceMs: 300 },
      domains: [domain('site.test', [origin.address])],
    });
  });
  afterAll(() => proxy.close());

  it('a stream that got its 408 (body too slow) does not keep its session open past limits.idleTimeoutMs', async () => {
    const c = await RawH2.connect({ port: tlsPort(proxy), localAddress: '127.0.31.2', servername: 'site.test', ca: pki.ca });
    let reason: string | null = null;
    proxy.app.pipeline.onObserve((o) => { if (o.source === '127.0.31.2') reason = o.proxyReason; });
    // A GET whose header block ends but whose stream does not (no END_STREAM) and whose body never comes.
    c.socket.write(frame(T.HEADERS, FLAG.END_HEADERS, 1, getHeaders('site.test')));
    expect(await until(() => (c.got.get(T.HEADERS) ?? 0) > 0, 5000)).toBe(true);
    expect(reason).toBe('body-too-slow');
    // Nothing is left to do on this connection: idle after 300 ms, checked every second, then GOAWAY and closed.
    await until(() => c.closed && proxy.app.listeners.h2.size === 0, 4000);
    expect({ closed: c.closed, openSessions: proxy.app.listeners.h2.size }).toEqual({ closed: true, openSessions: 0 });
    c.destroy();
  }, 15_000);
});
