// A request whose body streams on (limits.bufferBodyBytes 0, or a body past
// the bound) may wait its turn in the domain's upstream queue with the body
// still coming. If the body fails meanwhile (slower than the minimum rate, a
// chunked body past maxBodyBytes), the client gets its 408/413 then, the
// request never reaches the origin, the process does not fall over an 'error'
// that nobody listened to, and nothing is held afterwards.
// Real proxy, real origin, raw clients on their own 127.x addresses.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, domain, request, sleep, until, statusOf, openRaw, type Origin, type Proxy } from './helpers/servers.ts';
import type { Observation } from '../src/observe/observation.ts';

const HOST = 'qbody.test';
let origin: Origin;
/** Answers of the /hold requests the origin is sitting on. */
const holds: (() => void)[] = [];

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    req.resume();
    const answer = () => { if (!res.destroyed) { res.writeHead(200, { 'content-length': 2 }); res.end('ok'); } };
    if (req.url?.startsWith('/hold')) holds.push(answer);
    else req.on('end', answer);
  });
});
afterAll(async () => { await origin.close(); });

/**
 * A proxy whose domain takes one request at a time, that one held by the origin, and a second one waiting ahead of
 * the request under test: a holder that outlives the origin's answers gives its place back after about a second
 * (OriginGuard.tick), and the waiter ahead then takes it, so the request under test waits about two seconds.
 */
async function withQueuedProxy(limits: Record<string, unknown>, fn: (p: Proxy, seen: Observation[]) => Promise<void>): Promise<void> {
  const p = await startProxy({
    limits: { adaptive: { enabled: false }, queueTimeoutMs: 8000, minBodyRateBytesPerSec: 10_000, minBodyRateGraceMs: 300, ...limits },
    filter: { mode: 'off' },
    domains: [domain(HOST, [origin.address], { maxInflight: 1 })],
  });
  const seen: Observation[] = [];
  p.app.pipeline.onObserve((o) => seen.push(o));
  const waiting = () => p.app.pipeline.queues.get(HOST)?.queued ?? 0;
  const held = request(`${p.url}/hold1`, { headers: { host: HOST }, localAddress: '127.0.0.81' }).catch(() => null);
  const ahead = until(() => holds.length === 1, 2000).then(() => request(`${p.url}/hold2`, { headers: { host: HOST }, localAddress: '127.0.0.82' })).catch(() => null);
  try {
    expect(await until(() => waiting() === 1, 2000)).toBe(true);
    const queue = p.app.pipeline.queues.get(HOST)!;
    await fn(p, seen);
    for (let i = 0; i < 3 && holds.length < 2; i++) await sleep(500);
    for (const h of holds.splice(0)) h();
    expect((await held)?.status).toBe(200);
    expect((await ahead)?.status).toBe(200);
    const pl = p.app.pipeline;
    expect(await until(() => pl.inFlight === 0, 2000)).toBe(true);
    expect(pl.perSource.sources).toBe(0);
    expect(pl.budget.inFlight).toBe(0);
    expect(queue.queued).toBe(0);
    expect(queue.active).toBe(0);
  } finally { holds.length = 0; await p.close(); }
}

/** Sends `head` (and `body`, once it waits in the queue) and returns its answer and observation. */
async function queuedPost(p: Proxy, seen: Observation[], head: string, body: string, local: string): Promise<{ text: string; o: Observation | undefined }> {
  const queue = p.app.pipeline.queues.get(HOST)!;
  const c = openRaw(p.port, head, local);
  expect(await until(() => queue.queued === 2, 2000)).toBe(true);
  if (body) c.s.write(body);
  await Promise.race([c.closed, sleep(1800)]);
  c.s.destroy();
  return { text: c.text(), o: seen.find((o) => o.path === '/up') };
}

describe('a streamed body that fails while its request waits in the queue', () => {
  it('too slow (bufferBodyBytes 0): 408 body-too-slow while it waits, never sent upstream', async () => {
    await withQueuedProxy({ bufferBodyBytes: 0 }, async (p, seen) => {
      const r = await queuedPost(p, seen, `POST /up HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5000\r\n\r\n${'z'.repeat(10)}`, '', '127.0.0.83');
      expect(statusOf(r.text)).toBe(408);
      expect(r.text.toLowerCase()).toContain('x-scrubber: body-too-slow');
      expect(r.o?.upstreamMs).toBe(0);
      expect(origin.seen.some((s) => s.url === '/up')).toBe(false);
    });
  });

  it('chunked past maxBodyBytes (bufferBodyBytes 0): 413 body-too-large at once, never sent upstream', async () => {
    await withQueuedProxy({ bufferBodyBytes: 0, maxBodyBytes: 20_000 }, async (p, seen) => {
      const started = performance.now();
      const r = await queuedPost(p, seen, `POST /up HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n`, `7530\r\n${'y'.repeat(30_000)}\r\n`, '127.0.0.84');
      expect(statusOf(r.text)).toBe(413);
      expect(r.text.toLowerCase()).toContain('x-scrubber: body-too-large');
      expect(r.o?.upstreamMs).toBe(0);
      expect(performance.now() - started).toBeLessThan(1000);
      expect(origin.seen.some((s) => s.url === '/up')).toBe(false);
    });
  });

  it('too slow past the buffer bound (1 KiB read at the edge, then nothing): 408 while it waits', async () => {
    await withQueuedProxy({ bufferBodyBytes: 1024 }, async (p, seen) => {
      const r = await queuedPost(p, seen, `POST /up HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 200000\r\n\r\n${'x'.repeat(2048)}`, '', '127.0.0.86');
      expect(statusOf(r.text)).toBe(408);
      expect(r.o?.upstreamMs).toBe(0);
      expect(origin.seen.some((s) => s.url === '/up')).toBe(false);
    });
  });
});
