// Request bodies are read at the edge (limits.bufferBodyBytes, default 1 MiB)
// before the request goes upstream: a slow POST is cut by the proxy and never
// reaches the origin, a body within the bound reaches the origin whole and only
// once it is complete (also a chunked one), a longer one streams on after the
// buffered head intact, a buffered body is resent to the next upstream on a
// refused connect, and a client that leaves mid-body leaves nothing behind.
// Real proxy, real origin, real sockets, every client on its own 127.x address.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import crypto from 'node:crypto';
import { startProxy, startOrigin, freePort, domain, sleep, until, statusOf, openRaw, type Origin, type Proxy } from './helpers/servers.ts';
import type { Health } from '../src/upstream/health.ts';

const HOST = 'buf.test';
const FAILOVER = 'failover.test';

interface Hit {
  url: string;
  headers: http.IncomingHttpHeaders;
  /** performance.now() when the origin's handler was called (the request head arrived). */
  startedAt: number;
  /** Set once the whole body was read. */
  bytes: number;
  sha: string | null;
}

/** Every request the origin saw, in order (the handler starting is what counts as "seen"). */
const hits: Hit[] = [];
let origin: Origin;
let proxy: Proxy;

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
const hitsFor = (url: string) => hits.filter((h) => h.url === url);

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    const hit: Hit = { url: req.url ?? '', headers: req.headers, startedAt: performance.now(), bytes: 0, sha: null };
    hits.push(hit);
    const h = crypto.createHash('sha256');
    req.on('data', (c: Buffer) => { h.update(c); hit.bytes += c.length; });
    req.on('end', () => {
      hit.sha = h.digest('hex');
      const body = JSON.stringify({ bytes: hit.bytes, sha: hit.sha });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    req.on('error', () => {});
  });
  const refused = `127.0.0.1:${await freePort()}`;
  proxy = await startProxy(baseConfig({}, refused));
});
afterAll(async () => { await proxy.close(); await origin.close(); });
beforeEach(() => { hits.length = 0; });

function baseConfig(limits: Record<string, unknown>, refused?: string): Record<string, unknown> {
  return {
    limits: { minBodyRateBytesPerSec: 1000, minBodyRateGraceMs: 500, ...limits },
    filter: { mode: 'off' },
    domains: [domain(HOST, [origin.address]), ...(refused ? [domain(FAILOVER, [refused, origin.address])] : [])],
  };
}

async function withProxy(limits: Record<string, unknown>, fn: (p: Proxy) => Promise<void>): Promise<void> {
  const p = await startProxy(baseConfig(limits));
  try { await fn(p); } finally { await p.close(); }
}

/** Sends a slow POST (10 bytes every 100 ms of a declared 2000) until the proxy answers or closes, at most 4 s. */
async function slowPost(port: number, path: string, localAddress: string): Promise<{ text: string; ms: number; seenAtOrigin: number[] }> {
  const started = performance.now();
  const c = openRaw(port, `POST ${path} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 2000\r\n\r\n`, localAddress);
  const seenAtOrigin: number[] = [];
  const trickle = setInterval(() => {
    if (hitsFor(path).length > 0 && seenAtOrigin.length === 0) seenAtOrigin.push(performance.now() - started);
    if (!c.s.destroyed && c.text() === '') c.s.write('z'.repeat(10));
  }, 100);
  await Promise.race([c.closed, sleep(4000)]);
  clearInterval(trickle);
  c.s.destroy();
  return { text: c.text(), ms: performance.now() - started, seenAtOrigin };
}

interface Reply { status: number; headers: http.IncomingHttpHeaders; body: string }

/**
 * A POST whose body is written in `pieces` with `gapMs` between them. `beforeLast` runs just before
 * the last piece is written (its time is returned as lastWriteAt).
 */
function piecewisePost(port: number, path: string, pieces: Buffer[], o: { gapMs: number; localAddress: string; host?: string; chunked?: boolean; beforeLast?: () => void | Promise<void> }): Promise<{ reply: Reply; lastWriteAt: number }> {
  return new Promise((resolve, reject) => {
    const total = pieces.reduce((n, p) => n + p.length, 0);
    const headers: Record<string, string | number> = { host: o.host ?? HOST, 'content-type': 'application/octet-stream' };
    if (!o.chunked) headers['content-length'] = total;
    let lastWriteAt = 0;
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: false, localAddress: o.localAddress, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ reply: { status: res.statusCode ?? 0, headers: res.headers, body }, lastWriteAt }));
      res.on('error', reject);
    });
    req.setTimeout(4500, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    void (async () => {
      for (let i = 0; i < pieces.length - 1; i++) {
        req.write(pieces[i]);
        await sleep(o.gapMs);
      }
      await o.beforeLast?.();
      lastWriteAt = performance.now();
      req.end(pieces[pieces.length - 1]);
    })().catch((e) => req.destroy(e as Error));
  });
}

const split = (b: Buffer, n: number): Buffer[] => {
  const size = Math.ceil(b.length / n);
  return Array.from({ length: n }, (_, i) => b.subarray(i * size, Math.min(b.length, (i + 1) * size)));
};

describe('slow POST', () => {
  it('buffered (default): a body slower than the minimum rate gets 408 body-too-slow and the origin never sees the request', async () => {
    const r = await slowPost(proxy.port, '/slow-buffered', '127.0.0.61');
    expect(statusOf(r.text)).toBe(408);
    expect(r.text.toLowerCase()).toContain('x-scrubber: body-too-slow');
    // Cut by the rate check (about 1 s in), well before the 20 s the body would have taken.
    expect(r.ms).toBeLessThan(3000);
    await sleep(100);
    expect(hitsFor('/slow-buffered')).toHaveLength(0);
    expect(hits).toHaveLength(0);
  });

  it('contrast, bufferBodyBytes 0: the same slow POST reaches the origin while it trickles, before the 408', async () => {
    await withProxy({ bufferBodyBytes: 0 }, async (p) => {
      const r = await slowPost(p.port, '/slow-streamed', '127.0.0.62');
      expect(statusOf(r.text)).toBe(408);
      expect(r.text.toLowerCase()).toContain('x-scrubber: body-too-slow');
      // The origin had the request (and a worker tied up) while the body was still trickling.
      expect(hitsFor('/slow-streamed')).toHaveLength(1);
      expect(r.seenAtOrigin.length).toBe(1);
      expect(hitsFor('/slow-streamed')[0].sha).toBeNull(); // its body never completed
    });
  });
});

/** The origin got the body once, whole, with a Content-Length, and only after the client's last byte. */
function expectOneWholeBody(path: string, body: Buffer, lastWriteAt: number): void {
  const h = hitsFor(path);
  expect(h).toHaveLength(1);
  expect(h[0].startedAt).toBeGreaterThanOrEqual(lastWriteAt);
  expect(h[0].bytes).toBe(body.length);
  expect(h[0].sha).toBe(sha(body));
  expect(h[0].headers['content-length']).toBe(String(body.length));
}

describe('bodies within the bound', () => {
  it('a body sent in pieces over ~300 ms reaches the origin whole, and only after its last byte was sent', async () => {
    const body = crypto.randomBytes(40_000);
    let before = -1;
    const { reply, lastWriteAt } = await piecewisePost(proxy.port, '/pieces', split(body, 4), {
      gapMs: 100, localAddress: '127.0.0.63',
      beforeLast: async () => { await sleep(50); before = hits.length; },
    });
    expect(reply.status).toBe(200);
    // Three quarters of the body were sent 250+ ms ago, and still nothing at the origin.
    expect(before).toBe(0);
    expectOneWholeBody('/pieces', body, lastWriteAt);
    expect(JSON.parse(reply.body)).toEqual({ bytes: body.length, sha: sha(body) });
  });

  it('a chunked body within the bound reaches the origin intact, as one body with a Content-Length', async () => {
    const body = crypto.randomBytes(30_000);
    let before = -1;
    const { reply, lastWriteAt } = await piecewisePost(proxy.port, '/chunked', split(body, 5), {
      gapMs: 60, localAddress: '127.0.0.64', chunked: true,
      beforeLast: async () => { await sleep(50); before = hits.length; },
    });
    expect(reply.status).toBe(200);
    expect(before).toBe(0);
    expectOneWholeBody('/chunked', body, lastWriteAt);
    expect(hitsFor('/chunked')[0].headers['transfer-encoding']).toBeUndefined();
  });

  it('empty POST bodies pass, with Content-Length: 0 and chunked with no chunk', async () => {
    for (const chunked of [false, true]) {
      const { reply } = await piecewisePost(proxy.port, `/empty-${chunked}`, [Buffer.alloc(0)], { gapMs: 0, localAddress: '127.0.0.65', chunked });
      expect(reply.status).toBe(200);
      expect(JSON.parse(reply.body)).toEqual({ bytes: 0, sha: sha(Buffer.alloc(0)) });
      expect(hitsFor(`/empty-${chunked}`)).toHaveLength(1);
    }
  });
});

describe('bodies over the bound', () => {
  it('a 1 MiB body past a 64 KiB bound streams on after the buffered head, intact', async () => {
    // Random bytes: a lost, doubled or reordered piece (e.g. the replayed head sent twice) changes the hash.
    const body = crypto.randomBytes(1024 * 1024);
    await withProxy({ bufferBodyBytes: 64 * 1024 }, async (p) => {
      // Half the body, then a pause: past the bound the request is on its way before the client is done.
      let sawBeforeEnd = false;
      const { reply } = await piecewisePost(p.port, '/big', [body.subarray(0, 512 * 1024), body.subarray(512 * 1024)], {
        gapMs: 0, localAddress: '127.0.0.66',
        beforeLast: async () => { sawBeforeEnd = await until(() => hitsFor('/big').length === 1, 1500); },
      });
      expect(reply.status).toBe(200);
      expect(sawBeforeEnd).toBe(true);
      const h = hitsFor('/big');
      expect(h).toHaveLength(1);
      expect(h[0].bytes).toBe(body.length);
      expect(h[0].sha).toBe(sha(body));
      expect(JSON.parse(reply.body)).toEqual({ bytes: body.length, sha: sha(body) });
    });
  });

  it('bodies at the bound and one byte past it, sent in small writes, arrive intact', async () => {
    const bound = 16 * 1024;
    await withProxy({ bufferBodyBytes: bound }, async (p) => {
      for (const [i, size] of [bound - 1, bound, bound + 1, 3 * bound + 7].entries()) {
        const body = crypto.randomBytes(size);
        const path = `/edge-${size}`;
        const { reply } = await piecewisePost(p.port, path, split(body, 9), { gapMs: 5, localAddress: `127.0.0.${70 + i}`, chunked: i % 2 === 1 });
        expect(reply.status).toBe(200);
        expect(JSON.parse(reply.body)).toEqual({ bytes: size, sha: sha(body) });
      }
    });
  });
});

describe('failover', () => {
  it('a buffered POST body is resent whole to the next upstream when the first refuses the connection', async () => {
    const group = proxy.app.upstreams.groups.get(FAILOVER)!;
    const refusedUp = group.main[0];
    const failuresBefore = (refusedUp as unknown as { health: Health }).health.failures;
    // Round robin alternates the first upstream tried: of two requests, one starts on the refused one.
    for (let i = 0; i < 2; i++) {
      const body = crypto.randomBytes(10_000);
      const path = `/fo-${i}`;
      const { reply } = await piecewisePost(proxy.port, path, split(body, 3), { gapMs: 20, localAddress: '127.0.0.80', host: FAILOVER });
      expect(reply.status).toBe(200);
      const h = hitsFor(path);
      expect(h).toHaveLength(1);
      expect(h[0].bytes).toBe(body.length);
      expect(h[0].sha).toBe(sha(body));
    }
    // The refused upstream really was tried (and failed) on the way.
    expect((refusedUp as unknown as { health: Health }).health.failures).toBeGreaterThan(failuresBefore);
    expect(refusedUp.address).not.toBe(origin.address);
  });
});

describe('a client that leaves while its body is buffered', () => {
  it('leaves nothing behind: no request in flight, no budget held, no slot held, nothing at the origin', async () => {
    const pl = proxy.app.pipeline;
    const src = '127.0.0.90';
    const c = openRaw(proxy.port, `POST /gone HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5000\r\n\r\n` + 'g'.repeat(1000), src);
    // The request is being buffered: it is counted in flight and holds its declared size of the budget.
    expect(await until(() => pl.inFlight === 1 && pl.budget.inFlight === 5000, 1000)).toBe(true);
    expect(pl.perSource.of(src)).toBe(1);
    c.s.destroy();
    await c.closed;
    expect(await until(() => pl.inFlight === 0, 1000)).toBe(true);
    expect(pl.budget.inFlight).toBe(0);
    expect(pl.perSource.of(src)).toBe(0);
    expect(pl.queues.get(HOST)?.active ?? 0).toBe(0);
    await sleep(200);
    expect(hitsFor('/gone')).toHaveLength(0);
    // The proxy still serves the same source afterwards.
    const body = crypto.randomBytes(2000);
    const { reply } = await piecewisePost(proxy.port, '/after', [body], { gapMs: 0, localAddress: src });
    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body)).toEqual({ bytes: body.length, sha: sha(body) });
  });
});
