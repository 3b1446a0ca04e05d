// The newcomers' slice of the origin (src/limits/newcomer-slice.ts) and how the
// origin guard uses it (enterSlice, established, queueClass), on a fake clock:
// while a domain is under attack, every source without a history counts as
// one source together — a rotating flood gets at most the origin time one
// source may take before it is over its share, whatever its headers — while
// sources with a history (seen before the attack or the saturation, or for
// historyMs) are never counted in it. Outside an attack nothing is judged.
import { describe, expect, it } from 'vitest';
import { NewcomerSlice } from '../src/limits/newcomer-slice.ts';
import { OriginGuard } from '../src/limits/origin-guard.ts';
import { loadConfigObject } from '../src/config/load.ts';
import type { Config, DomainConfig } from '../src/config/schema.ts';

function config(over: Record<string, unknown> = {}): Config {
  const r = loadConfigObject({ log: { level: 'silent' }, domains: [{ name: 'site.test', upstreams: ['127.0.0.1:9'] }], ...over }, {});
  if (!r.ok) throw new Error(r.problems.join('\n'));
  return r.config;
}

describe('NewcomerSlice', () => {
  it('starts with burstMs worth of the allowance, then refills at allowance per window', () => {
    const s = new NewcomerSlice({ windowMs: 20_000, burstMs: 2000 });
    // Allowance 2000 ms per 20 s: the bucket holds 200 ms; requests of 100 ms.
    let t = 0, n = 0;
    while (s.admit(t, 2000)) { s.leave(100); n++; }
    expect(n).toBe(2);
    expect(s.refused).toBe(1);
    // 100 ms a second come back: one more 100 ms request a second.
    const per: number[] = [];
    for (let sec = 1; sec <= 10; sec++) {
      let k = 0;
      for (t = sec * 1000; t < sec * 1000 + 1000; t += 10) if (s.admit(t, 2000)) { s.leave(100); k++; }
      per.push(k);
    }
    expect(per.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(9);
    expect(per.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(11);
    expect(Math.max(...per)).toBeLessThanOrEqual(2);
  });

  it('counts requests not answered yet at the mean newcomer request: no burst admitted before the answers', () => {
    const s = new NewcomerSlice();
    // Before any answer: one at a time.
    expect(s.admit(0, 10_000)).toBe(true);
    expect(s.admit(0, 10_000)).toBe(false);
    s.leave(100);
    // Bucket of 1000 ms, 100 spent; at 100 ms each, 9 more may be in flight at once, not more.
    let held = 0;
    while (s.admit(0, 10_000)) held++;
    expect(held).toBe(9);
    expect(s.held).toBe(9);
    // A request given up (its client left) gives its place back and costs nothing.
    s.leave(null);
    expect(s.admit(2, 10_000)).toBe(true);
  });

  it('an answer that took long leaves a debt of one window at most; with no allowance known, one at a time', () => {
    const s = new NewcomerSlice();
    expect(s.admit(0, 1000)).toBe(true);
    s.leave(60_000); // a timeout of a minute
    expect(s.admit(1, 1000)).toBe(false);
    expect(s.tokens).toBeGreaterThanOrEqual(-1000);
    // The debt is paid back by one window's refill (plus the bucket): admitted again after ~21 s.
    expect(s.admit(20_000, 1000)).toBe(false);
    expect(s.admit(21_200, 1000)).toBe(true);
    s.leave(10);
    const u = new NewcomerSlice();
    expect(u.admit(0, null)).toBe(true);
    expect(u.admit(0, null)).toBe(false);
    u.leave(5);
    expect(u.admit(0, null)).toBe(true);
  });
});

describe('the origin guard: newcomers share one slice while under attack', () => {
  function setup(cfg = config()) {
    const clock = { t: 1_000_000 };
    const guard = new OriginGuard(cfg, { now: () => clock.t, onOverShare: () => {} });
    const d = guard.of(cfg.domains[0] as DomainConfig);
    return { clock, guard, d };
  }

  it('sources with a history are never in the slice; newcomers are only while under attack; rank 0 never', () => {
    const { clock, guard, d } = setup();
    // Twenty API clients used the origin before the attack (a request a second each, 20 ms).
    for (let s = 0; s < 20; s++) for (let k = 0; k < 5; k++) { clock.t = 1_000_000 + k * 1000 + s; guard.sample(d, `api${s}`, 20, false); }
    clock.t = 1_006_000;
    const since = 1_005_500;
    expect(guard.enterSlice(d, 'new1', 1, 0)).toBe(0); // no attack: nothing judged (a flash crowd)
    expect(guard.enterSlice(d, 'api3', 1, since)).toBe(0); // seen before the attack
    expect(guard.enterSlice(d, 'trusted', 0, since)).toBe(0); // a browser that passed the challenge
    expect(guard.enterSlice(d, 'new1', 1, since)).toBe(1);
    expect(guard.enterSlice(d, 'bad', 2, since)).toBe(-1); // suspicious and new: in the slice too (one at a time before a first answer)
    guard.leaveSlice(d, 30);
    // Established by historyMs: first answered after the attack began, still coming back 10 s later.
    guard.sample(d, 'late', 20, false);
    clock.t += 5000;
    expect(d.established(clock.t, 'late', since)).toBe(false);
    clock.t += 5000;
    expect(d.established(clock.t, 'late', since)).toBe(true);
  });

  /** Forty clients with a history, then 30 s of a rotating flood (200 new addresses a second, a 100 ms search each):
   *  the origin time the flood got through the slice, and how many of its requests were refused. */
  function rotatingFlood(cfg = config()): { newcomerMs: number; refused: number } {
    const { clock, guard, d } = setup(cfg);
    const t0 = clock.t;
    // Forty clients with a history: a request a second, 20 ms each (400 ms per 20 s window each).
    const clients = (from: number, to: number) => {
      for (let t = from; t < to; t += 1000) for (let s = 0; s < 40; s++) { clock.t = t + s * 10; guard.sample(d, `api${s}`, 20, false); }
    };
    clients(t0, t0 + 10_000);
    const since = t0 + 10_000;
    let newcomerMs = 0, refused = 0, id = 0;
    for (let sec = 0; sec < 30; sec++) {
      const base = since + sec * 1000;
      clients(base, base + 1000);
      for (let k = 0; k < 200; k++) {
        clock.t = base + k * 5;
        const src = `flood${id++}`;
        const n = guard.enterSlice(d, src, 1, since);
        if (n < 0) { refused++; continue; }
        expect(n).toBe(1);
        guard.sample(d, src, 100, false);
        guard.leaveSlice(d, 100);
        newcomerMs += 100;
      }
      // The clients are never counted in it.
      for (let s = 0; s < 40; s++) expect(guard.enterSlice(d, `api${s}`, 1, since)).toBe(0);
    }
    return { newcomerMs, refused };
  }

  it('a rotating flood gets at most overShareRatio × the typical source\'s origin time; the clients with a history keep theirs', () => {
    const { newcomerMs, refused } = rotatingFlood();
    // The typical client used 400 ms per 20 s; 4 × that per 20 s for all newcomers together: 2.4 s in 30 s, plus the
    // bucket it starts with. Out of 6000 requests (600 s of origin time) asked.
    expect(newcomerMs).toBeGreaterThan(1500);
    expect(newcomerMs).toBeLessThanOrEqual(2400 + 200 + 100);
    expect(refused).toBeGreaterThan(5900);
  });

  it('filter.fairShare.newcomerSources sizes the slice: half a source\'s worth (what each of two workers gives) lets half through', () => {
    // With workers, each worker's newcomers are a share of the node's: each worker gives them its share of the slice
    // (workerConfig), so that the workers together give the newcomers what one process would.
    const half = rotatingFlood(config({ filter: { fairShare: { newcomerSources: 0.5 } } }));
    expect(half.newcomerMs).toBeGreaterThan(700);
    expect(half.newcomerMs).toBeLessThanOrEqual(1200 + 100 + 100);
    const two = rotatingFlood(config({ filter: { fairShare: { newcomerSources: 2 } } }));
    expect(two.newcomerMs).toBeGreaterThan(3500);
    expect(two.newcomerMs).toBeLessThanOrEqual(4800 + 400 + 100);
  });

  it('in the fair queue an unknown source with a history counts as one (an API client), a suspicious one does not', () => {
    const { clock, guard, d } = setup();
    guard.sample(d, 'api', 20, false);
    clock.t += 1000;
    guard.sample(d, 'fresh', 20, false);
    const since = clock.t - 500;
    expect(guard.queueClass(d, 'api', 1, since)).toBe(0);
    expect(guard.queueClass(d, 'fresh', 1, since)).toBe(1);
    expect(guard.queueClass(d, 'api', 2, since)).toBe(2);
    expect(guard.queueClass(d, 'nobody', 1, since)).toBe(1);
    // Without an attack, a history is historyMs of it.
    expect(guard.queueClass(d, 'api', 1, 0)).toBe(1);
    clock.t += 10_000;
    expect(guard.queueClass(d, 'api', 1, 0)).toBe(0);
  });

  it('fairShare.enabled false: no slice, no promotion', () => {
    const { clock, guard, d } = setup(config({ filter: { fairShare: { enabled: false } } }));
    clock.t += 1;
    expect(guard.enterSlice(d, 'new', 1, clock.t - 1000)).toBe(0);
    expect(guard.queueClass(d, 'new', 1, clock.t - 1000)).toBe(1);
  });
});
