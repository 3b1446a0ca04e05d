// The per-domain upstream queue (domains[].maxInflight, limits.queueTimeoutMs,
// limits.maxQueued): the UpstreamQueue class on its own (admission, class
// order, round robin between sources, timeout, push-out when full, cancel,
// reconfigure), then end to end through the proxy with real origins and
// clients bound to distinct 127.x addresses: the cap holds at the origin, a
// waiter times out with queue-timeout (429 when it cannot use a page), a source with one request is not
// stuck behind a source with twelve, a reload that raises the cap lets
// waiters go, and bad values are refused by the config loader.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { UpstreamQueue, type QueueRefusal, type Waiter } from '../src/limits/upstream-queue.ts';
import { loadConfigObject } from '../src/config/load.ts';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';
import type { Observation } from '../src/observe/observation.ts';
import { startOrigin, startProxy, request, domain, sleep, until, type Origin, type Proxy, type RawResponse } from './helpers/servers.ts';

// ---- unit: UpstreamQueue -------------------------------------------------------------------

/** A queue plus a log of what it called: "run:<name>" or "refuse:<name>:<why>". */
function harness(limit: number, timeoutMs = 1000, maxQueued = 100) {
  const q = new UpstreamQueue(limit, timeoutMs, maxQueued);
  const log: string[] = [];
  const add = (name: string, source: string, cls: number): Waiter =>
    q.wait(source, cls, () => log.push(`run:${name}`), (why: QueueRefusal) => log.push(`refuse:${name}:${why}`));
  return { q, log, add };
}

describe('UpstreamQueue (unit)', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.clearAllTimers(); vi.useRealTimers(); });

  it('tryEnter admits up to the limit, then refuses; leave() makes room again', () => {
    const { q } = harness(2);
    expect(q.tryEnter()).toBe(true);
    expect(q.tryEnter()).toBe(true);
    expect(q.tryEnter()).toBe(false);
    expect(q.tryEnter()).toBe(false);
    expect(q.active).toBe(2);
    q.leave();
    expect(q.active).toBe(1);
    expect(q.tryEnter()).toBe(true);
    expect(q.tryEnter()).toBe(false);
  });

  it('a waiter that declines its turn (run returns false: refused at the last moment) gives the place to the next, without recursion', () => {
    const q = new UpstreamQueue(1, 1000, 20_000);
    const ran: string[] = [];
    expect(q.tryEnter()).toBe(true);
    // Ten thousand newcomers that will be refused at their turn, then one that goes.
    for (let i = 0; i < 10_000; i++) q.wait(`n${i}`, 1, () => false, () => {});
    q.wait('api', 1, () => { ran.push('api'); }, () => {});
    q.leave();
    expect(ran).toEqual(['api']);
    expect(q.active).toBe(1);
    expect(q.queued).toBe(0);
  });

  it('waiters whose turn ends at once (answered by the proxy: OPTIONS *, a domain a reload removed) run one after another, not nested', () => {
    // Each such turn gives its place back from inside run(); a pump() that recursed there went one level deeper per
    // waiter, and a couple of thousand queued behind a busy origin overflowed the stack (an uncaught RangeError, with
    // the places and the requests of the unwound turns never given back).
    const q = new UpstreamQueue(1, 1000, 20_000);
    let depth = 0, deepest = 0, ran = 0;
    expect(q.tryEnter()).toBe(true);
    for (let i = 0; i < 5000; i++) {
      q.wait(`s${i}`, 1, () => { depth++; deepest = Math.max(deepest, depth); ran++; q.leave(); depth--; return true; }, () => {});
    }
    q.leave();
    expect(ran).toBe(5000);
    expect(deepest).toBe(1);
    expect(q.active).toBe(0);
    expect(q.queued).toBe(0);
    expect(q.tryEnter()).toBe(true);
  });

  it('leave() runs the next waiter, and only one per leave', () => {
    const { q, log, add } = harness(1);
    expect(q.tryEnter()).toBe(true);
    add('w1', 's', 1);
    add('w2', 's', 1);
    expect(log).toEqual([]);
    expect(q.queued).toBe(2);
    // A newcomer may not jump the queue while others wait, even if a slot is free.
    q.leave();
    expect(log).toEqual(['run:w1']);
    expect(q.active).toBe(1);
    expect(q.queued).toBe(1);
    expect(q.tryEnter()).toBe(false);
    q.leave();
    expect(log).toEqual(['run:w1', 'run:w2']);
    expect(q.queued).toBe(0);
    q.leave();
    expect(q.active).toBe(0);
    expect(q.tryEnter()).toBe(true);
  });

  it('limit 0 is no cap: tryEnter always admits and a waiter runs at once', () => {
    const { q, log, add } = harness(0);
    for (let i = 0; i < 500; i++) expect(q.tryEnter()).toBe(true);
    expect(q.active).toBe(500);
    add('w', 's', 2);
    expect(log).toEqual(['run:w']);
    expect(q.queued).toBe(0);
  });

  it('round robin between the sources of a class: B queued after five of A runs second, not sixth', () => {
    const { q, log, add } = harness(1);
    q.tryEnter();
    for (let i = 1; i <= 5; i++) add(`A${i}`, 'A', 1);
    add('B1', 'B', 1);
    for (let i = 0; i < 6; i++) q.leave();
    expect(log).toEqual(['run:A1', 'run:B1', 'run:A2', 'run:A3', 'run:A4', 'run:A5']);
    expect(q.waitingSources()).toEqual([0, 0, 0]);
  });

  it('round robin turns over three sources in turn, each its oldest request first', () => {
    const { q, log, add } = harness(1);
    q.tryEnter();
    add('A1', 'A', 1); add('A2', 'A', 1); add('A3', 'A', 1);
    add('B1', 'B', 1); add('B2', 'B', 1);
    add('C1', 'C', 1);
    expect(q.waitingSources()).toEqual([0, 3, 0]);
    for (let i = 0; i < 6; i++) q.leave();
    expect(log).toEqual(['run:A1', 'run:B1', 'run:C1', 'run:A2', 'run:B2', 'run:A3']);
  });

  it('class order: a class-0 waiter queued last runs before class-1 and class-2 waiters', () => {
    const { q, log, add } = harness(1);
    q.tryEnter();
    add('bad', 'x', 2);
    add('unknown', 'y', 1);
    add('good', 'z', 0);
    expect(q.waitingSources()).toEqual([1, 1, 1]);
    q.leave();
    expect(log).toEqual(['run:good']);
    q.leave();
    q.leave();
    expect(log).toEqual(['run:good', 'run:unknown', 'run:bad']);
  });

  it('a class out of range is clamped (negative → 0, large → 2)', () => {
    const { q, log, add } = harness(1);
    q.tryEnter();
    add('big', 'x', 7);
    add('mid', 'y', 1);
    add('neg', 'z', -3);
    expect(q.waitingSources()).toEqual([1, 1, 1]);
    q.leave(); q.leave(); q.leave();
    expect(log).toEqual(['run:neg', 'run:mid', 'run:big']);
  });

  it('room: with no free upstream connection a request waits even under the limit (or with none); kick() lets it go once there is', () => {
    for (const limit of [0, 5]) {
      const q = new UpstreamQueue(limit, 1000, 100);
      const log: string[] = [];
      // Free connections: a request that goes takes one (as its dispatch does), an ended response gives it back.
      let free = 1;
      q.room = () => free > 0;
      const add = (name: string, source: string) => q.wait(source, 1, () => { free--; log.push(`run:${name}`); }, (why) => log.push(`refuse:${name}:${why}`));
      expect(q.tryEnter()).toBe(true);
      free--;
      expect(q.tryEnter()).toBe(false);
      add('w1', 's');
      add('w2', 't');
      // A place in the limit given back changes nothing while the upstreams have no room.
      q.leave();
      expect(log).toEqual([]);
      free++;
      q.kick();
      expect(log).toEqual(['run:w1']);
      free++;
      q.kick();
      expect(log).toEqual(['run:w1', 'run:w2']);
      expect(q.queued).toBe(0);
    }
  });

  it('a waiter is refused with queue-timeout after timeoutMs, and nothing else is run', () => {
    const { q, log, add } = harness(1, 300);
    q.tryEnter();
    add('w', 's', 1);
    vi.advanceTimersByTime(299);
    expect(log).toEqual([]);
    expect(q.queued).toBe(1);
    vi.advanceTimersByTime(1);
    expect(log).toEqual(['refuse:w:queue-timeout']);
    expect(q.queued).toBe(0);
    expect(q.active).toBe(1);
    expect(q.waitingSources()).toEqual([0, 0, 0]);
    // The refused waiter is gone for good: a later leave() runs nothing and no second call comes.
    q.leave();
    vi.advanceTimersByTime(5000);
    expect(log).toEqual(['refuse:w:queue-timeout']);
    expect(q.active).toBe(0);
  });

  it('a waiter that was run is not later refused by its timer', () => {
    const { q, log, add } = harness(1, 300);
    q.tryEnter();
    add('w', 's', 1);
    vi.advanceTimersByTime(100);
    q.leave();
    vi.advanceTimersByTime(1000);
    expect(log).toEqual(['run:w']);
  });

  it('queue full: a better-class newcomer pushes out the oldest waiter of the worst class', () => {
    const { q, log, add } = harness(1, 10_000, 3);
    q.tryEnter();
    add('x2-old', 'x', 2);
    add('y2-new', 'y', 2);
    add('u1', 'u', 1);
    expect(q.queued).toBe(3);
    // Class 0 newcomer: the oldest class-2 waiter goes.
    add('g1', 'g', 0);
    expect(log).toEqual(['refuse:x2-old:queue-full']);
    expect(q.queued).toBe(3);
    // Class 1 newcomer: the remaining class-2 waiter goes (worse than the newcomer).
    add('u2', 'v', 1);
    expect(log).toEqual(['refuse:x2-old:queue-full', 'refuse:y2-new:queue-full']);
    expect(q.waitingSources()).toEqual([1, 2, 0]);
    // The survivors run in class order; the pushed-out ones never run.
    q.leave(); q.leave(); q.leave();
    expect(log.slice(2)).toEqual(['run:g1', 'run:u1', 'run:u2']);
  });

  it('queue full: a newcomer with no worse class to push out is refused itself', () => {
    const { q, log, add } = harness(1, 10_000, 2);
    q.tryEnter();
    add('a', 'a', 1);
    add('b', 'b', 0);
    // Same class as the worst waiter (1): nobody is worse, so the newcomer goes.
    const c = add('c', 'c', 1);
    expect(log).toEqual(['refuse:c:queue-full']);
    expect(c.waiting).toBe(false);
    // A worse newcomer (2) as well.
    add('d', 'd', 2);
    expect(log).toEqual(['refuse:c:queue-full', 'refuse:d:queue-full']);
    expect(q.queued).toBe(2);
    q.leave(); q.leave();
    expect(log.slice(2)).toEqual(['run:b', 'run:a']);
    // The refused newcomers have no timers left that could fire later.
    vi.advanceTimersByTime(20_000);
    expect(log).toHaveLength(4);
  });

  it('cancel() removes a waiter without calling run or refuse, and frees its room', () => {
    const { q, log, add } = harness(1, 300, 1);
    q.tryEnter();
    const w1 = add('w1', 's', 1);
    expect(q.queued).toBe(1);
    q.cancel(w1);
    expect(w1.waiting).toBe(false);
    expect(q.queued).toBe(0);
    expect(q.waitingSources()).toEqual([0, 0, 0]);
    // The room is free: a same-class newcomer is queued, not refused as queue-full.
    add('w2', 's', 1);
    expect(log).toEqual([]);
    q.leave();
    expect(log).toEqual(['run:w2']);
    // w1's timer was cleared: nothing more after its timeout; a second cancel is harmless.
    vi.advanceTimersByTime(1000);
    q.cancel(w1);
    expect(log).toEqual(['run:w2']);
    expect(q.queued).toBe(0);
  });

  it('reconfigure() raising the limit runs waiters at once; limit 0 runs them all', () => {
    const { q, log, add } = harness(1);
    q.tryEnter();
    for (let i = 1; i <= 5; i++) add(`w${i}`, `s${i}`, 1);
    expect(log).toEqual([]);
    q.reconfigure(3, 1000, 100);
    expect(log).toEqual(['run:w1', 'run:w2']);
    expect(q.active).toBe(3);
    expect(q.queued).toBe(3);
    q.reconfigure(0, 1000, 100);
    expect(log).toEqual(['run:w1', 'run:w2', 'run:w3', 'run:w4', 'run:w5']);
    expect(q.queued).toBe(0);
    expect(q.active).toBe(6);
  });
});

// ---- end to end ----------------------------------------------------------------------------

interface Site {
  origin: Origin;
  /** Requests the origin is working on right now, and the most at once. */
  active: number;
  peak: number;
  /** performance.now() when each request reached the origin, in order. */
  starts: number[];
  /** Manual sites: answers every held request. */
  release(): void;
}

/** An origin that holds each request holdMs (or, with 'manual', until release()), counting concurrency. */
async function startSite(hold: number | 'manual'): Promise<Site> {
  const held: http.ServerResponse[] = [];
  const site: Site = {
    origin: null as unknown as Origin, active: 0, peak: 0, starts: [],
    release: () => { for (const r of held.splice(0)) finish(r); },
  };
  const finish = (res: http.ServerResponse) => {
    if (res.writableEnded) return;
    site.active--; // counted down before the answer leaves, so the proxy's next request cannot overlap it
    if (res.destroyed) return;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 4 });
    res.end('done');
  };
  site.origin = await startOrigin((req, res) => {
    site.starts.push(performance.now());
    site.active++;
    site.peak = Math.max(site.peak, site.active);
    req.resume();
    if (hold === 'manual') {
      held.push(res);
      // A safety net: nothing is held past 4 s even if a test fails before releasing.
      setTimeout(() => finish(res), 4000).unref();
    } else {
      setTimeout(() => finish(res), hold);
    }
  });
  return site;
}

const HOST = 'queue.test';
const get = (p: Proxy, path: string, localAddress?: string): Promise<RawResponse> =>
  request(p.url + path, { headers: { host: HOST }, localAddress });
const queueOf = (p: Proxy) => p.app.pipeline.queues.get(HOST);

async function withProxy(site: Site, limits: Record<string, unknown>, maxInflight: number, extra: Record<string, unknown>, fn: (p: Proxy) => Promise<void>): Promise<void> {
  const p = await startProxy({ limits, filter: { mode: 'off' }, ...extra, domains: [domain(HOST, [site.origin.address], { maxInflight })] });
  try { await fn(p); } finally { site.release(); await p.close(); await site.origin.close(); }
}

describe('upstream queue through the proxy', () => {
  it('maxInflight 2: six concurrent GETs, the origin never sees more than 2 at once, all get 200', async () => {
    const site = await startSite(150);
    await withProxy(site, {}, 2, {}, async (p) => {
      const all = Promise.all(Array.from({ length: 6 }, (_, i) => get(p, `/r${i}`)));
      // While the first two are at the origin, the other four wait in the proxy.
      expect(await until(() => queueOf(p)?.queued === 4, 1000)).toBe(true);
      expect(site.starts.length).toBe(2);
      expect(queueOf(p)!.active).toBe(2);
      const rs = await all;
      expect(rs.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
      expect(rs.every((r) => r.body === 'done')).toBe(true);
      expect(site.starts.length).toBe(6);
      // Exactly the cap: more would mean the queue let too many through, fewer that it serialised.
      expect(site.peak).toBe(2);
      // Everything counted back out.
      expect(await until(() => queueOf(p)!.active === 0, 1000)).toBe(true);
      expect(queueOf(p)!.queued).toBe(0);
    });
  });

  it('queue timeout: a waiter gets queue-timeout with Retry-After: 1 after queueTimeoutMs, never reaching the origin', async () => {
    const site = await startSite(1500);
    await withProxy(site, { queueTimeoutMs: 300 }, 1, {}, async (p) => {
      const first = get(p, '/first');
      expect(await until(() => site.starts.length === 1, 1000)).toBe(true);
      const t0 = performance.now();
      const second = await get(p, '/second');
      const waited = performance.now() - t0;
      // No Accept: no browser navigation, so it cannot use the 503 page and is told 429 (a browser gets the page).
      expect(second.status).toBe(429);
      expect(second.headers['x-scrubber']).toBe('queue-timeout');
      expect(second.headers['retry-after']).toBe('1');
      // About queueTimeoutMs, not the 1.5 s the first request holds the slot.
      expect(waited).toBeGreaterThan(250);
      expect(waited).toBeLessThan(900);
      const r1 = await first;
      expect(r1.status).toBe(200);
      await sleep(100);
      expect(site.origin.seen.map((s) => s.url)).toEqual(['/first']);
      expect(queueOf(p)!.queued).toBe(0);
      expect(queueOf(p)!.active).toBe(0);
    });
  });

  it('fairness: one request of source B overtakes most of the twelve queued by source A', async () => {
    const site = await startSite(50);
    const A = '127.0.0.2';
    const B = '127.0.0.3';
    // Both sources whitelisted: the same class (0) whatever the filter makes of A's burst, so only round robin is at work.
    await withProxy(site, { maxInflightPerSource: 24 }, 1, { filter: { mode: 'off', whitelist: [A, B] } }, async (p) => {
      const order: string[] = [];
      const track = (label: string, r: Promise<RawResponse>) => r.then((x) => { order.push(label); return x; });
      const as = Array.from({ length: 12 }, (_, i) => track(`A${i}`, get(p, `/a${i}`, A)));
      // All of A's requests are in: one at the origin, eleven waiting.
      expect(await until(() => queueOf(p)?.queued === 11, 2000)).toBe(true);
      const b = track('B', get(p, '/b', B));
      const rs = await Promise.all([...as, b]);
      expect(rs.every((r) => r.status === 200)).toBe(true);
      const f = p.app.filter as ScrubberFilter;
      expect(f.rank(A)).toBe(f.rank(B));
      const afterB = order.length - 1 - order.indexOf('B');
      // Round robin: B goes second or third, so about ten of A's finish after it; a FIFO queue would give 0.
      expect(afterB).toBeGreaterThanOrEqual(8);
      expect(site.peak).toBe(1);
    });
  });

  it('a client that leaves while waiting is taken out of the queue and never reaches the origin', async () => {
    const site = await startSite('manual');
    await withProxy(site, {}, 1, {}, async (p) => {
      const first = get(p, '/held');
      expect(await until(() => site.starts.length === 1, 1000)).toBe(true);
      // A POST whose whole body was read at the edge, then waits for the slot.
      const c = net.connect({ port: p.port, host: '127.0.0.1', localAddress: '127.0.0.4' });
      c.on('error', () => {});
      c.write(`POST /leaver HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5\r\n\r\nhello`);
      expect(await until(() => queueOf(p)?.queued === 1, 1000)).toBe(true);
      expect(p.app.pipeline.inFlight).toBe(2);
      c.destroy();
      // Cancelled at once: out of the queue, its budget and per-source slot given back.
      expect(await until(() => queueOf(p)!.queued === 0 && p.app.pipeline.inFlight === 1, 1000)).toBe(true);
      expect(p.app.pipeline.budget.inFlight).toBe(0);
      expect(p.app.pipeline.perSource.of('127.0.0.4')).toBe(0);
      site.release();
      expect((await first).status).toBe(200);
      // The freed slot is not handed to the departed client.
      await sleep(150);
      expect(site.origin.seen.map((s) => s.url)).toEqual(['/held']);
      expect(queueOf(p)!.active).toBe(0);
      expect(p.app.pipeline.inFlight).toBe(0);
    });
  });

  it('a client that leaves after its request went upstream: the request runs on and keeps the slot until the application answers', async () => {
    // The application keeps working on a request whose client left; handing its slot to the next waiter at once
    // would put two requests on a capacity of one.
    const site = await startSite(600);
    await withProxy(site, {}, 1, {}, async (p) => {
      const c = net.connect({ port: p.port, host: '127.0.0.1', localAddress: '127.0.0.5' });
      c.on('error', () => {});
      c.write(`GET /leaver HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
      expect(await until(() => site.starts.length === 1, 1000)).toBe(true);
      const next = get(p, '/next');
      expect(await until(() => queueOf(p)?.queued === 1, 1000)).toBe(true);
      c.destroy();
      await sleep(250);
      // The leaver's slot is still taken: /next waits, the origin has one request.
      expect(queueOf(p)!.queued).toBe(1);
      expect(site.starts.length).toBe(1);
      const r = await next;
      expect(r.status).toBe(200);
      expect(site.peak).toBe(1);
      // The origin answered the leaver (its request was not cut), then took /next.
      expect(site.origin.seen.map((s) => s.url)).toEqual(['/leaver', '/next']);
      expect(await until(() => queueOf(p)!.active === 0 && p.app.pipeline.inFlight === 0, 1000)).toBe(true);
    });
  });

  it('requests waiting in the queue turn attack mode on (auto), though the application never failed', async () => {
    const site = await startSite(60);
    await withProxy(site, { maxInflightPerSource: 0 }, 1, { filter: { mode: 'auto', attack: { enterSeconds: 2, learnSeconds: 300 } } }, async (p) => {
      const f = p.app.filter as ScrubberFilter;
      expect(f.snapshot().underAttack).not.toContain(HOST);
      // About 16 requests a second, 6 at a time against a capacity of one: most of them wait. Bounded: at most 4 s.
      const end = Date.now() + 4000;
      let statuses = new Set<number>();
      while (Date.now() < end && !f.snapshot().underAttack.includes(HOST)) {
        const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => get(p, `/busy${i}`, `127.0.9.${i + 1}`)));
        statuses = new Set([...statuses, ...rs.map((r) => r.status)]);
      }
      expect(f.snapshot().underAttack).toContain(HOST);
      // Nothing failed: the queue kept the application within its capacity. (The last round may straddle the start of
      // attack mode: these six sources have no history from before it, so a request of theirs still waiting then is
      // held to the newcomers' slice at its turn, and told 429: the filter engaging, not the application failing.)
      expect([...statuses].filter((s) => s !== 200 && s !== 429)).toEqual([]);
      expect(statuses.has(200)).toBe(true);
      expect(site.peak).toBe(1);
    });
  });

  it('the time waited is told apart from the time at the application (the filter charges a source only the latter)', async () => {
    const site = await startSite(300);
    await withProxy(site, {}, 1, {}, async (p) => {
      const seen: Observation[] = [];
      p.app.pipeline.onObserve((o) => { seen.push(o); });
      const rs = await Promise.all([get(p, '/one'), get(p, '/two')]);
      expect(rs.map((r) => r.status)).toEqual([200, 200]);
      expect(await until(() => seen.length === 2, 1000)).toBe(true);
      const [first, second] = [...seen].sort((a, b) => a.queuedMs - b.queuedMs);
      expect(first.queuedMs).toBe(0);
      expect(second.queuedMs).toBeGreaterThan(250);
      for (const o of [first, second]) {
        expect(o.upstreamMs).toBeGreaterThan(250);
        expect(o.upstreamMs).toBeLessThan(700);
        expect(o.durationMs).toBeGreaterThanOrEqual(o.queuedMs + o.upstreamMs - 5);
      }
    });
  });

  it('a reload that raises maxInflight lets waiting requests go at once', async () => {
    const site = await startSite('manual');
    const p = await startProxy({ filter: { mode: 'off' }, domains: [domain(HOST, [site.origin.address], { maxInflight: 1 })] });
    try {
      const all = Promise.all([0, 1, 2].map((i) => get(p, `/r${i}`)));
      expect(await until(() => site.starts.length === 1 && queueOf(p)?.queued === 2, 1000)).toBe(true);
      await sleep(100);
      expect(site.starts.length).toBe(1); // still capped
      const next = loadConfigObject({
        listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0, token: '' }, log: { level: 'silent' },
        state: { dir: p.stateDir }, filter: { mode: 'off' },
        domains: [domain(HOST, [site.origin.address], { maxInflight: 3 })],
      }, {});
      expect(next.ok).toBe(true);
      expect(p.app.reload(next)).toEqual({ ok: true });
      // Nothing released at the origin: the two waiters went because of the reload alone.
      expect(await until(() => site.starts.length === 3, 1000)).toBe(true);
      expect(queueOf(p)!.queued).toBe(0);
      expect(site.peak).toBe(3);
      site.release();
      const rs = await all;
      expect(rs.map((r) => r.status)).toEqual([200, 200, 200]);
    } finally {
      site.release();
      await p.close();
      await site.origin.close();
    }
  });
});

describe('config validation of domains[].maxInflight', () => {
  const cfg = (maxInflight: unknown) => loadConfigObject({ log: { level: 'silent' }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:9'], maxInflight }] }, {});

  it.each([[-1], ['x'], [1.5], [null]])('%j is refused with a problem naming domains[0].maxInflight', (v) => {
    const r = cfg(v);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.some((s) => s.startsWith('domains[0].maxInflight'))).toBe(true);
  });

  it('0 and whole numbers are accepted; omitted means 0 (no cap)', () => {
    const zero = cfg(0);
    expect(zero.ok && zero.config.domains[0].maxInflight).toBe(0);
    const four = cfg(4);
    expect(four.ok && four.config.domains[0].maxInflight).toBe(4);
    const omitted = loadConfigObject({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:9'] }] }, {});
    expect(omitted.ok && omitted.config.domains[0].maxInflight).toBe(0);
  });
});
