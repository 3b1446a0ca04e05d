// Bodies stream both ways with backpressure (a slow reader on either side does
// not make the proxy buffer the body), an upstream connection that answered
// before reading the whole request body is not reused, and a client that goes
// away mid-response takes the upstream request with it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import crypto from 'node:crypto';
import { once } from 'node:events';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startOrigin, startProxy, request, domain, sleep, type Origin, type Proxy } from './helpers/servers.ts';
import type { Observation } from '../src/observe/observation.ts';

// RSS alone counts garbage: every chunk a socket reads is a fresh Buffer, so even a direct
// download "grows" RSS by the body size until a GC. Collecting before each sample measures
// what is actually held.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const live = () => { gc(); return process.memoryUsage(); };

const MB = 1024 * 1024;
const BIG = 50 * MB;
const CHUNK = 64 * 1024;
// Distinct chunks, written in a fixed rotation: a lost, doubled or reordered chunk changes the hash.
const CHUNKS = Array.from({ length: 16 }, () => crypto.randomBytes(CHUNK));
const expectedHash = (() => { const h = crypto.createHash('sha256'); for (let i = 0; i < BIG / CHUNK; i++) h.update(CHUNKS[i % 16]); return h.digest('hex'); })();

/** Writes BIG bytes honouring backpressure, so the writer itself never buffers. */
async function writeBig(w: NodeJS.WritableStream & { destroyed?: boolean }): Promise<void> {
  for (let i = 0; i < BIG / CHUNK; i++) {
    if (w.destroyed) return;
    if (!w.write(CHUNKS[i % 16])) await once(w, 'drain');
  }
}

interface Peak { rss: number; buffers: number }
const peak = (): Peak => { const m = live(); return { rss: m.rss, buffers: m.arrayBuffers }; };

/** Reads a stream slowly (a pause per MB), hashing it; records the peak of live memory meanwhile. */
async function readSlowly(r: NodeJS.ReadableStream, max: Peak | null): Promise<{ bytes: number; hash: string }> {
  const h = crypto.createHash('sha256');
  let bytes = 0;
  let nextPause = MB;
  for await (const c of r as AsyncIterable<Buffer>) {
    h.update(c);
    bytes += c.length;
    if (bytes >= nextPause) {
      nextPause += MB;
      if (max) { const p = peak(); max.rss = Math.max(max.rss, p.rss); max.buffers = Math.max(max.buffers, p.buffers); }
      await sleep(30);
    }
  }
  return { bytes, hash: h.digest('hex') };
}

let origin: Origin;
let connections = 0;
let proxy: Proxy;
const aborted: { closedBeforeEnd: boolean }[] = [];
const observed: Observation[] = [];
let uploadPeak: Peak | null = null;

beforeAll(async () => {
  origin = await startOrigin(async (req, res) => {
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG });
      await writeBig(res);
      res.end();
      return;
    }
    if (req.url === '/upload') {
      const r = await readSlowly(req, uploadPeak);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(r));
      return;
    }
    if (req.url === '/early-413' || req.url === '/early-200') {
      // Answers at once, without reading the body (an application refusing an upload).
      const status = req.url === '/early-413' ? 413 : 200;
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 5 });
      res.end('early');
      return;
    }
    if (req.url === '/hang') {
      // First bytes of the body, then nothing: the client gives up mid-response.
      const entry = { closedBeforeEnd: false };
      aborted.push(entry);
      res.on('close', () => { entry.closedBeforeEnd = !res.writableFinished; });
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first part\n');
      return;
    }
    req.resume();
    req.on('end', () => res.end(`ok from ${origin.port}`));
  });
  origin.server.on('connection', () => { connections++; });
  proxy = await startProxy({
    upstream: { connectTimeoutMs: 300, responseTimeoutMs: 5000, keepAliveTimeoutMs: 10000 },
    // The first 64 KiB of a body are read at the edge, the rest streams: these tests are about the streaming part.
    limits: { maxBodyBytes: 64 * MB, postBudgetBytes: 256 * MB, minBodyRateBytesPerSec: 0, bufferBodyBytes: 64 * 1024 },
    domains: [domain('stream.test', [origin.address])],
  });
  proxy.app.pipeline.onObserve((o) => { observed.push(o); });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

describe('backpressure', () => {
  it('a 50 MB download to a slow client streams: the proxy does not hold the body in memory', async () => {
    const base = peak();
    const max = { ...base };
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.get(proxy.url + '/big', { agent: false, headers: { host: 'stream.test' } }, resolve);
      req.on('error', reject);
    });
    expect(res.statusCode).toBe(200);
    const r = await readSlowly(res, max);
    expect(r.bytes).toBe(BIG);
    expect(r.hash).toBe(expectedHash);
    // Origin, proxy and client share this process: had the proxy ignored backpressure, the
    // origin (which writes as fast as it may) would have pushed most of the 50 MB into it.
    // Measured: ~4 MB of live buffers with backpressure, ~48 MB without. RSS also carries the
    // first test's warm-up (JIT, heap growth): ~20-30 MB with backpressure, ~65 MB without.
    expect(max.buffers - base.buffers).toBeLessThan(10 * MB);
    expect(max.rss - base.rss).toBeLessThan(45 * MB);
  });

  it('a 50 MB upload to a slow upstream streams intact, without buffering', async () => {
    const base = peak();
    const max = { ...base };
    uploadPeak = max;
    {
      const body = await new Promise<string>((resolve, reject) => {
        const req = http.request(proxy.url + '/upload', {
          method: 'POST', agent: false, headers: { host: 'stream.test', 'content-length': BIG, 'content-type': 'application/octet-stream' },
        }, (res) => { let b = ''; res.setEncoding('utf8'); res.on('data', (c) => (b += c)); res.on('end', () => resolve(b)); });
        req.on('error', reject);
        void writeBig(req).then(() => req.end());
      });
      const r = JSON.parse(body) as { bytes: number; hash: string };
      expect(r.bytes).toBe(BIG);
      expect(r.hash).toBe(expectedHash);
    }
    // Sampled by the origin's slow reader while the body was arriving.
    expect(max.buffers - base.buffers).toBeLessThan(10 * MB);
    expect(max.rss - base.rss).toBeLessThan(45 * MB);
  });
});

describe('early answers', () => {
  /** Sends a POST whose body the upstream will not read, then a GET; returns how many new upstream connections each made. */
  async function earlyThenGet(path: string): Promise<{ status: number; newConnections: number }> {
    // Warm one keep-alive connection and prove it is reused, so that a new one later means something.
    await request(proxy.url + '/', { headers: { host: 'stream.test' } });
    const warm = connections;
    await request(proxy.url + '/', { headers: { host: 'stream.test' } });
    expect(connections).toBe(warm);

    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(proxy.url + path, { method: 'POST', agent: false, headers: { host: 'stream.test', 'content-length': 4 * MB } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      // The proxy may close our connection before it has read all we send; that is fine here.
      req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? undefined : reject(e)));
      req.write(Buffer.alloc(256 * 1024, 1));
      // The rest is sent only after a pause, so the upstream has certainly answered before the body is complete.
      setTimeout(() => { if (!req.destroyed) req.end(Buffer.alloc(4 * MB - 256 * 1024, 2)); }, 200);
    });
    const before = connections;
    const r = await request(proxy.url + '/', { headers: { host: 'stream.test' } });
    expect(r.status).toBe(200);
    return { status, newConnections: connections - before };
  }

  it('an upstream that answers 413 before reading the body: that connection is not reused', async () => {
    const r = await earlyThenGet('/early-413');
    expect(r.status).toBe(413);
    expect(r.newConnections).toBe(1);
  });

  it('the same for an early 200', async () => {
    const r = await earlyThenGet('/early-200');
    expect(r.status).toBe(200);
    expect(r.newConnections).toBe(1);
  });
});

describe('early answers, the client side', () => {
  it('the client is told Connection: close and its connection is closed, not left hanging mid-body', async () => {
    const s = net.connect(proxy.port, '127.0.0.1');
    s.on('error', () => {});
    let got = '';
    s.on('data', (c) => { got += c; });
    const closed = once(s, 'close');
    await once(s, 'connect');
    s.write(`POST /early-413 HTTP/1.1\r\nHost: stream.test\r\nContent-Length: ${MB}\r\n\r\n`);
    s.write(Buffer.alloc(256 * 1024, 1));
    const t = performance.now();
    while (!got.includes('\r\n\r\nearly') && performance.now() - t < 2000) await sleep(10);
    const head = got.split('\r\n\r\n')[0].toLowerCase();
    expect(head).toMatch(/^http\/1.1 413/);
    expect(head).toContain('connection: close');
    const timer = setTimeout(() => s.destroy(), 3000);
    await closed;
    clearTimeout(timer);
    expect(performance.now() - t).toBeLessThan(2500);
  });
});

describe('client aborts', () => {
  it('a client that goes away mid-response aborts the upstream request; the proxy stays healthy', async () => {
    const n = aborted.length;
    const obsBefore = observed.length;
    await new Promise<void>((resolve, reject) => {
      const req = http.get(proxy.url + '/hang', { agent: false, headers: { host: 'stream.test' } }, (res) => {
        res.once('data', () => { req.destroy(); resolve(); });
      });
      req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
    });
    const t = performance.now();
    while (!(aborted[n]?.closedBeforeEnd) && performance.now() - t < 2000) await sleep(10);
    expect(aborted[n].closedBeforeEnd).toBe(true);

    const up = proxy.app.upstreams.groups.get('stream.test')!.main[0];
    expect(up.healthy).toBe(true);
    expect(up.health.failures).toBe(0);
    // Recorded as what it was: the application answered 200 and the client left, not a proxy 502.
    while (observed.length === obsBefore && performance.now() - t < 2000) await sleep(10);
    const o = observed.find((x, i) => i >= obsBefore && x.path === '/hang')!;
    expect(o.status).toBe(200);
    expect(o.proxyReason).toBeNull();
    expect(o.upstreamError).toBeNull();
    expect(proxy.app.pipeline.inFlight).toBe(0);

    const r = await request(proxy.url + '/', { headers: { host: 'stream.test' } });
    expect(r.status).toBe(200);
  });

  it('a client that goes away before the answer aborts the upstream request too', async () => {
    const n = aborted.length;
    const s = net.connect(proxy.port, '127.0.0.1');
    await once(s, 'connect');
    s.write('GET /hang HTTP/1.1\r\nHost: stream.test\r\n\r\n');
    const t = performance.now();
    while (aborted.length === n && performance.now() - t < 2000) await sleep(5);
    s.destroy();
    while (!(aborted[n]?.closedBeforeEnd) && performance.now() - t < 2000) await sleep(10);
    expect(aborted[n].closedBeforeEnd).toBe(true);
    const o = observed.find((x) => x.path === '/hang' && x.status !== 200);
    // No 502 in the statistics for a client that left, and no failure held against the upstream.
    expect(o?.proxyReason ?? null).toBeNull();
    expect(o?.upstreamError ?? null).toBeNull();
    expect(proxy.app.upstreams.groups.get('stream.test')!.main[0].health.failures).toBe(0);
    expect((await request(proxy.url + '/', { headers: { host: 'stream.test' } })).status).toBe(200);
  });
});
