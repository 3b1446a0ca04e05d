// HTTP/2 abuses from a raw client (test/helpers/h2-raw.ts) and Node's http2
// client: each is refused cheaply (the connection is cut, little or nothing
// reaches the upstream) and counted against its source. Which part stops
// each one is in src/listen/h2-guard.ts; these tests are the proof.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import fs from 'node:fs';
import { startOrigin, startProxy, domain, until, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';
import { RawH2, T, FLAG, frame, getHeaders, FILLER_HEADER, RST_CANCEL } from './helpers/h2-raw.ts';
import { H2_BUDGET } from '../src/listen/h2-guard.ts';

let pki: TestPki;
let origin: Origin;
let hits = 0;
beforeAll(async () => {
  pki = makePki();
  origin = await startOrigin((_q, r) => { hits++; setTimeout(() => r.end('x'), 50); });
});
afterAll(() => origin.close());

const HEADERS = getHeaders('a.test');
const PING = Buffer.alloc(8);

async function start(filter: Record<string, unknown> = {}, limits: Record<string, unknown> = {}): Promise<{ proxy: Proxy; port: number; told: [string, string][] }> {
  const a = pki.leaf('a.test');
  const proxy = await startProxy({ tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }] }, filter, limits, domains: [domain('a.test', [origin.address])] });
  // What the listeners tell the filter of client errors, recorded on the way (the real detector still gets it).
  const told: [string, string][] = [];
  const g = proxy.app.pipeline.filter;
  const orig = g.onClientError.bind(g);
  g.onClientError = (source, kind) => { told.push([source, kind]); orig(source, kind); };
  return { proxy, port: proxy.app.listeners.addresses().find((x) => x.tls)!.port, told };
}

const open = (port: number, localAddress: string) => RawH2.connect({ port, localAddress, servername: 'a.test', ca: pki.ca });
const banOf = (p: Proxy, s: string) => p.app.filter.banOf(s);

describe('HTTP/2 rapid reset (CVE-2023-44487)', () => {
  const rapidReset = (i: number) => Buffer.concat(Array.from({ length: 100 }, (_, k) => { const id = 1 + 2 * (i * 100 + k); return Buffer.concat([frame(T.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, id, HEADERS), frame(T.RST_STREAM, 0, id, RST_CANCEL)]); }));

  it('a rapid-reset connection is cut after a few dozen streams, which hardly reach the upstream; a source that comes back is banned', async () => {
    const { proxy, port, told } = await start();
    hits = 0;
    let sent = 0;
    let n = 0;
    while (!banOf(proxy, '127.0.6.1') && n < 25) {
      n++;
      let c: RawH2;
      try { c = await open(port, '127.0.6.1'); } catch { break; }
      sent += 100 * await c.flood(rapidReset, 200, 5000);
      expect(c.closed).toBe(true);
      c.destroy();
    }
    expect(banOf(proxy, '127.0.6.1')).toBeDefined();
    // Each connection was cut after a few batches (usually one or two; a loaded machine delays the check), by the
    // budget of streams that never surfaced or by the filter (each stream that did surface is a request): before
    // nghttp2's own limit (1000 resets) would have.
    expect(sent / n).toBeLessThan(1000);
    // Cut by one of the two: the budget of streams that never surfaced (told as a malformed connection), or the
    // filter's rate rules on the streams that did (which one comes first depends on how many surface).
    const byBudget = told.some(([src, k]) => src === '127.0.6.1' && k === 'HPE_H2_REFUSED_STREAMS');
    const byRate = ['rate-extreme', 'flood', 'malformed'].includes(banOf(proxy, '127.0.6.1')!.rule);
    expect(byBudget || byRate).toBe(true);
    expect(hits).toBeLessThan(10 * n);
    await proxy.close();
  });

  it('with the filter off the connection is still closed with GOAWAY (our budget or nghttp2\'s reset rate limit) and counted against the source', async () => {
    const { proxy, port, told } = await start({ mode: 'off' });
    hits = 0;
    const c = await open(port, '127.0.6.2');
    const batches = await c.flood(rapidReset, 200, 5000);
    expect(c.closed).toBe(true);
    expect(c.goaway).not.toBeNull();
    // Well before the 20 000 it would have sent (the client's count lags the server's cut by a round trip).
    expect(batches * 100).toBeLessThan(5000);
    expect(hits).toBeLessThan(10);
    // Cut by nghttp2 (PROTOCOL) or by our budget of streams that never surfaced, whichever came first.
    expect(told.some(([src, k]) => src === '127.0.6.2' && (k === 'HPE_H2_PROTOCOL' || k === 'HPE_H2_REFUSED_STREAMS'))).toBe(true);
    c.destroy();
    await proxy.close();
  });
});

describe('floods and protocol abuse on one connection', () => {
  let proxy: Proxy;
  let port: number;
  let told: [string, string][];
  beforeAll(async () => { ({ proxy, port, told } = await start({ mode: 'off' })); });
  afterAll(() => proxy.close());

  it('PING flood from a client that reads its ACKs: Node answers every one; we cut the connection past the budget (GOAWAY ENHANCE_YOUR_CALM)', async () => {
    const c = await open(port, '127.0.7.1');
    const batches = await c.flood(() => Buffer.concat(Array.from({ length: 20 }, () => frame(T.PING, 0, 0, PING))), 1000);
    expect(c.closed).toBe(true);
    expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    // Cut at the budget: the ACKs it got are about the budget (plus what one read held), not the 20 000 it tried.
    expect(c.got.get(T.PING) ?? 0).toBeLessThan(H2_BUDGET.pings + 500);
    expect(batches).toBeLessThan(500);
    expect(told).toContainEqual(['127.0.7.1', 'HPE_H2_PING_FLOOD']);
    expect(proxy.app.listeners.h2.cut.HPE_H2_PING_FLOOD).toBe(1);
    c.destroy();
  });

  it('SETTINGS flood (empty SETTINGS, read ACKs): cut past the budget', async () => {
    const c = await open(port, '127.0.7.2');
    await c.flood(() => Buffer.concat(Array.from({ length: 20 }, () => frame(T.SETTINGS, 0, 0))), 1000);
    expect(c.closed).toBe(true);
    expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    expect(told).toContainEqual(['127.0.7.2', 'HPE_H2_SETTINGS_FLOOD']);
  });

  it('a SETTINGS frame with too many entries: Node (maxSettings) closes with ENHANCE_YOUR_CALM', async () => {
    const c = await open(port, '127.0.7.3');
    // 40 entries of SETTINGS_HEADER_TABLE_SIZE = 4096: more than maxSettings (32).
    const entry = Buffer.from([0, 1, 0, 0, 0x10, 0]);
    await c.flood(() => frame(T.SETTINGS, 0, 0, Buffer.concat(Array.from({ length: 40 }, () => entry))), 10);
    expect(c.closed).toBe(true);
    expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    expect(told).toContainEqual(['127.0.7.3', 'HPE_H2_PROTOCOL']);
  });

  it('CONTINUATION flood (CVE-2024-27983 family): a header block that never ends is refused by nghttp2 after 8 CONTINUATION frames', async () => {
    hits = 0;
    const c = await open(port, '127.0.7.4');
    const batches = await c.flood((i) => (i === 0 ? frame(T.HEADERS, FLAG.END_STREAM, 1, HEADERS) : frame(T.CONTINUATION, 0, 1, FILLER_HEADER)), 10_000);
    expect(c.closed).toBe(true);
    expect(c.goaway).not.toBeNull();
    // Of the 10 000 frames it would have sent (the client's count lags the server's cut by a round trip).
    expect(batches).toBeLessThan(2000);
    expect(hits).toBe(0);
    expect(told).toContainEqual(['127.0.7.4', 'HPE_H2_PROTOCOL']);
  });

  it('CONTINUATION frames of nothing (a zero-length flood) are refused as well', async () => {
    const c = await open(port, '127.0.7.5');
    const batches = await c.flood((i) => (i === 0 ? frame(T.HEADERS, 0, 1, HEADERS.subarray(0, 3)) : Buffer.concat(Array.from({ length: 100 }, () => frame(T.CONTINUATION, 0, 1)))), 10_000);
    expect(c.closed).toBe(true);
    expect(batches).toBeLessThan(1000);
    expect(told).toContainEqual(['127.0.7.5', 'HPE_H2_PROTOCOL']);
  });

  it('more streams than SETTINGS_MAX_CONCURRENT_STREAMS (100): nghttp2 closes the connection; at most 100 requests were ever started', async () => {
    hits = 0;
    const started = proxy.app.pipeline.inFlight;
    const c = await open(port, '127.0.7.6');
    // Wait for our SETTINGS ACK to be read: before it, nghttp2 refuses streams one by one instead.
    await new Promise((r) => setTimeout(r, 100));
    await c.flood((i) => Buffer.concat(Array.from({ length: 50 }, (_, k) => frame(T.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1 + 2 * (i * 50 + k), HEADERS))), 20);
    // Closed by nghttp2 (PROTOCOL_ERROR); the GOAWAY is sometimes lost behind the answers of the first streams.
    expect(c.closed).toBe(true);
    expect(hits).toBeLessThanOrEqual(100);
    expect(proxy.app.pipeline.inFlight - started).toBeLessThanOrEqual(100);
    expect(told).toContainEqual(['127.0.7.6', 'HPE_H2_PROTOCOL']);
  });

  it('header blocks over maxHeaderListPairs: Node refuses each stream (RST_STREAM ENHANCE_YOUR_CALM) unseen by JavaScript; past the budget of refused streams the connection is cut', async () => {
    hits = 0;
    const c = await open(port, '127.0.7.9');
    // 2100 header fields: more than the backstop of 2000 pairs (limits.maxHeaderCount is the flow's, answered 431), each its own stream.
    const big = Buffer.concat([HEADERS, ...Array.from({ length: 2100 }, () => Buffer.from([0x10, 3, 0x78, 0x2d, 0x61, 1, 0x76]))]);
    const batches = await c.flood((i) => frame(T.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1 + 2 * i, big), 3000);
    expect(c.closed).toBe(true);
    expect(c.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    expect(c.got.get(T.RST_STREAM) ?? 0).toBeGreaterThan(0);
    // Cut within a sweep (1 s) of passing the budget: far fewer than the 3000 it would have sent.
    expect(batches).toBeLessThan(1000);
    expect(hits).toBe(0);
    expect(told).toContainEqual(['127.0.7.9', 'HPE_H2_REFUSED_STREAMS']);
  });

  it('a WINDOW_UPDATE of 0 (an invalid frame) closes the connection (PROTOCOL_ERROR)', async () => {
    const c = await open(port, '127.0.7.7');
    await c.flood(() => frame(T.WINDOW_UPDATE, 0, 0, Buffer.alloc(4)), 10);
    expect(c.closed).toBe(true);
    expect(c.goaway).toBe(http2.constants.NGHTTP2_PROTOCOL_ERROR);
    expect(told).toContainEqual(['127.0.7.7', 'HPE_H2_PROTOCOL']);
  });

  it('a browser\'s few PINGs and one SETTINGS pass: Node\'s http2 client pings, the connection stays', async () => {
    const s = http2.connect(`https://a.test:${port}`, { ca: fs.readFileSync(pki.ca), host: '127.0.0.1', servername: 'a.test', localAddress: '127.0.7.8' } as http2.SecureClientSessionOptions);
    await new Promise((r) => s.once('remoteSettings', r));
    for (let i = 0; i < 10; i++) await new Promise<void>((r, j) => s.ping((e) => (e ? j(e) : r())));
    s.settings({ enablePush: false });
    const r = s.request({ ':path': '/' });
    r.resume();
    const status = await new Promise((res) => r.on('response', (h) => res(h[':status'])));
    expect(status).toBe(200);
    expect(s.destroyed).toBe(false);
    expect(told.filter(([src]) => src === '127.0.7.8')).toEqual([]);
    s.close();
  });
});

describe('counted against the source', () => {
  it('a source that comes back flooding PINGs is banned (each cut is a malformed request to the filter)', async () => {
    const { proxy, port } = await start();
    let n = 0;
    while (!banOf(proxy, '127.0.8.1') && n < 40) {
      n++;
      let c: RawH2;
      try { c = await open(port, '127.0.8.1'); } catch { break; }
      await c.flood(() => Buffer.concat(Array.from({ length: 60 }, () => frame(T.PING, 0, 0, PING))), 5, 1000);
      c.destroy();
    }
    expect(banOf(proxy, '127.0.8.1')).toBeDefined();
    expect(n).toBeLessThanOrEqual(25);
    await proxy.close();
  });
});

describe('idle sessions', () => {
  it('a session with no open stream is closed after limits.idleTimeoutMs (GOAWAY), as an idle HTTP/1.1 keep-alive is', async () => {
    const { proxy, port } = await start({}, { idleTimeoutMs: 300 });
    const s = http2.connect(`https://a.test:${port}`, { ca: fs.readFileSync(pki.ca), host: '127.0.0.1', servername: 'a.test', localAddress: '127.0.9.1' } as http2.SecureClientSessionOptions);
    s.on('error', () => {});
    const goaway = new Promise<number>((r) => s.once('goaway', (code) => r(code)));
    const r = s.request({ ':path': '/' });
    r.resume();
    await new Promise((res) => r.on('end', res));
    const t0 = performance.now();
    expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    expect(performance.now() - t0).toBeLessThan(2000);
    s.destroy();
    await proxy.close();
  });

  it('PINGs within their budget do not keep a session with no request alive', async () => {
    const { proxy, port, told } = await start({}, { idleTimeoutMs: 300 });
    const c = await open(port, '127.0.9.2');
    const t0 = performance.now();
    // A PING every 200 ms: well within the budget, and bytes both ways all the time.
    await c.flood(() => frame(T.PING, 0, 0, PING), 20, 4000, 200);
    expect(c.closed).toBe(true);
    expect(c.goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(told.filter(([src]) => src === '127.0.9.2')).toEqual([]);
    c.destroy();
    await proxy.close();
  });

  it('slowloris on HTTP/2 (a header block never finished: no stream exists yet) is closed as idle', async () => {
    const { proxy, port } = await start({}, { idleTimeoutMs: 300 });
    const c = await open(port, '127.0.9.3');
    const t0 = performance.now();
    // Anything but a CONTINUATION after it would be a protocol error at once; the slow client sends nothing.
    c.socket.write(frame(T.HEADERS, FLAG.END_STREAM, 1, HEADERS.subarray(0, 3)));
    await until(() => c.closed, 4000);
    expect(c.closed).toBe(true);
    expect(performance.now() - t0).toBeLessThan(3000);
    c.destroy();
    await proxy.close();
  });

  it('a stream waiting for a slow upstream keeps its session past the idle time', async () => {
    const slow = await startOrigin((_q, res) => { setTimeout(() => res.end('late'), 900); });
    const a = pki.leaf('a.test');
    const proxy = await startProxy({ tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }] }, limits: { idleTimeoutMs: 300 }, domains: [domain('a.test', [slow.address])] });
    const port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
    const s = http2.connect(`https://a.test:${port}`, { ca: fs.readFileSync(pki.ca), host: '127.0.0.1', servername: 'a.test' } as http2.SecureClientSessionOptions);
    const r = s.request({ ':path': '/' });
    let body = '';
    r.on('data', (c) => { body += c; });
    await new Promise((res) => r.on('end', res));
    expect(body).toBe('late');
    s.destroy();
    await proxy.close();
    await slow.close();
  });
});
