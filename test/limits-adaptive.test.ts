// The adaptive upstream limit on a fake clock, against a tiny origin model
// whose latency grows with its load: latency = base × max(1, inflight / capacity).
import { describe, it, expect } from 'vitest';
import { AdaptiveLimit, type AdaptiveLimitOptions } from '../src/limits/adaptive-limit.ts';

interface Phase { ms: number; demand: number; capacity: number; baseMs?: number; dropShare?: number; outlierShare?: number }
interface Trace { t: number; limit: number; inflight: number; saturated: boolean }

/** Closed loop: `demand` clients each keep one request outstanding; the proxy lets `limit` of them through to the origin. */
function simulate(lim: AdaptiveLimit, phases: Phase[], startAt = 0): Trace[] {
  const running: { start: number; end: number; drop: boolean }[] = [];
  const trace: Trace[] = [];
  let now = startAt, seq = 0;
  for (const ph of phases) {
    const base = ph.baseMs ?? 10;
    const until = now + ph.ms;
    for (; now < until; now++) {
      for (let i = running.length - 1; i >= 0; i--) {
        const r = running[i];
        if (r.end > now) continue;
        const inflight = running.length;
        running.splice(i, 1);
        lim.onSample(now, now - r.start, inflight, r.drop, Math.max(0, ph.demand - inflight));
      }
      while (running.length < Math.min(ph.demand, lim.limit)) {
        seq++;
        const load = running.length + 1;
        let lat = base * Math.max(1, load / ph.capacity);
        if (ph.outlierShare && seq % Math.round(1 / ph.outlierShare) === 0) lat = 5000;
        const drop = !!ph.dropShare && seq % Math.round(1 / ph.dropShare) === 0;
        running.push({ start: now, end: now + Math.max(1, Math.round(lat)), drop });
      }
      if (now % 100 === 0) trace.push({ t: now, limit: lim.limit, inflight: running.length, saturated: lim.saturated });
    }
  }
  return trace;
}
const last = (tr: Trace[], ms: number) => tr.filter((x) => x.t >= tr[tr.length - 1].t - ms);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const make = (o: AdaptiveLimitOptions = {}) => new AdaptiveLimit(o);

describe('adaptive limit', () => {
  it('slow start: in front of a busy healthy origin it stops holding requests back within two seconds (its first probe, then doubling by half)', () => {
    for (const baseMs of [1, 2, 10]) {
      const lim = make();
      const tr = simulate(lim, [{ ms: 10_000, demand: 150, capacity: 1000, baseMs }]);
      const free = tr.find((x) => x.limit >= 150);
      expect(free?.t, `base ${baseMs} ms`).toBeLessThanOrEqual(2000); // without slow start: 1.5, 3 and 7.5 s
    }
  });

  it('slow start ends at the first window slower than the allowance: an origin saturated from the start is not flooded', () => {
    for (const capacity of [8, 32]) {
      const lim = make();
      const tr = simulate(lim, [{ ms: 10_000, demand: 400, capacity }]);
      expect(Math.max(...tr.map((x) => x.limit)), `capacity ${capacity}`).toBeLessThanOrEqual(capacity * 5);
      expect(mean(last(tr, 3000).map((x) => x.limit)), `capacity ${capacity}`).toBeLessThanOrEqual(capacity * 2.5);
    }
  });

  it('converges near the origin\'s real capacity under a demand far above it', () => {
    for (const capacity of [8, 32, 100]) {
      const lim = make();
      const tr = simulate(lim, [{ ms: 30_000, demand: 400, capacity }]);
      const l = mean(last(tr, 10_000).map((x) => x.limit));
      expect(l, `capacity ${capacity}`).toBeGreaterThanOrEqual(capacity);
      expect(l, `capacity ${capacity}`).toBeLessThanOrEqual(capacity * 2.5);
      expect(lim.noLoadRttMs!).toBeLessThan(12);
      expect(lim.saturated).toBe(true);
    }
  });

  it('stays calm and unsaturated while the demand is below capacity', () => {
    const lim = make();
    const tr = simulate(lim, [{ ms: 20_000, demand: 10, capacity: 32 }]);
    expect(tr.some((x) => x.saturated)).toBe(false);
    expect(lim.limit).toBeGreaterThanOrEqual(20);
  });

  it('grows with an origin that takes more, up to the demand', () => {
    const lim = make();
    const tr = simulate(lim, [{ ms: 30_000, demand: 300, capacity: 200 }]);
    expect(mean(last(tr, 5000).map((x) => x.limit))).toBeGreaterThanOrEqual(200);
  });

  it('shrinks when the origin gets slower and recovers when it is back, and when the load drops', () => {
    const lim = make();
    const tr = simulate(lim, [
      { ms: 20_000, demand: 400, capacity: 32 },
      { ms: 20_000, demand: 400, capacity: 8 },
    ]);
    const degraded = mean(last(tr, 5000).map((x) => x.limit));
    expect(degraded).toBeLessThanOrEqual(8 * 2.5);
    const tr2 = simulate(lim, [{ ms: 20_000, demand: 400, capacity: 32 }], 40_000);
    const back = mean(last(tr2, 5000).map((x) => x.limit));
    expect(back).toBeGreaterThanOrEqual(32);
    const tr3 = simulate(lim, [{ ms: 5000, demand: 5, capacity: 32 }], 60_000);
    expect(tr3[tr3.length - 1].saturated).toBe(false);
    expect(lim.saturatedAt(65_000)).toBe(false);
  });

  it('never goes below its floor, even with an origin that takes one at a time and drops', () => {
    const lim = make({ minLimit: 6 });
    const tr = simulate(lim, [{ ms: 20_000, demand: 500, capacity: 1, dropShare: 0.5 }]);
    expect(Math.min(...tr.map((x) => x.limit))).toBeGreaterThanOrEqual(Math.ceil(6 * 0.25));
    expect(Math.min(...tr.filter((x) => x.t > 0).map((x) => x.limit).filter((_, i, a) => i >= a.length - 10))).toBeGreaterThanOrEqual(6);
    expect(lim.limit).toBeGreaterThanOrEqual(6);
    expect(lim.saturated).toBe(true);
  });

  it('respects the explicit ceiling (domains[].maxInflight)', () => {
    const lim = make({ maxLimit: 40 });
    const tr = simulate(lim, [{ ms: 20_000, demand: 1000, capacity: 500 }]);
    expect(Math.max(...tr.map((x) => x.limit))).toBeLessThanOrEqual(40);
    expect(lim.limit).toBe(40);
    lim.setMaxLimit(25);
    expect(lim.limit).toBeLessThanOrEqual(25);
  });

  it('does not collapse on a few slow outliers', () => {
    const clean = make(), noisy = make();
    const a = simulate(clean, [{ ms: 20_000, demand: 400, capacity: 32 }]);
    const b = simulate(noisy, [{ ms: 20_000, demand: 400, capacity: 32, outlierShare: 0.03 }]);
    const la = mean(last(a, 5000).map((x) => x.limit)), lb = mean(last(b, 5000).map((x) => x.limit));
    expect(lb).toBeGreaterThan(la * 0.7);
  });

  it('started in the middle of an attack, finds the no-load latency and says saturated within seconds', () => {
    // The first samples are all loaded (20 in flight on an origin that takes 8): only the probe can see base latency.
    const lim = make();
    const tr = simulate(lim, [{ ms: 10_000, demand: 2000, capacity: 8, baseMs: 20 }]);
    const firstSat = tr.find((x) => x.saturated);
    expect(firstSat).toBeDefined();
    expect(firstSat!.t).toBeLessThanOrEqual(5000);
    expect(lim.noLoadRttMs!).toBeLessThan(20 * 1.3);
    expect(mean(last(tr, 3000).map((x) => x.limit))).toBeLessThanOrEqual(8 * 2.5);
  });

  it('under a long attack the limit does not creep upwards', () => {
    const lim = make();
    const tr = simulate(lim, [{ ms: 180_000, demand: 400, capacity: 32 }]);
    expect(Math.max(...last(tr, 60_000).map((x) => x.limit))).toBeLessThanOrEqual(32 * 2.5);
  });

  it('on a worker-pool origin with mixed costs (the lab\'s shape), holds the origin near its slots at full throughput', () => {
    // slots workers, a FIFO queue in the origin, costs from assets (1 ms) to a search (120 ms), contention.
    const MIX = [1, 1, 1, 1, 1, 8, 1, 1, 1, 1, 8, 120, 1, 1, 8, 5, 1, 1, 1, 8];
    const run = (slots: number, demand: number, ms: number) => {
      const lim = make();
      const queue: { start: number; cost: number }[] = [], busy: { start: number; end: number }[] = [];
      let inflight = 0, k = 0, served = 0, sat = false;
      const limits: number[] = [];
      for (let now = 0; now < ms; now++) {
        for (let i = busy.length - 1; i >= 0; i--) if (busy[i].end <= now) {
          const b = busy.splice(i, 1)[0];
          lim.onSample(now, now - b.start, inflight, false, Math.max(0, demand - inflight));
          inflight--;
          if (now >= ms - 5000) served++;
        }
        while (inflight < Math.min(demand, lim.limit)) { inflight++; queue.push({ start: now, cost: MIX[k++ % MIX.length] }); }
        while (busy.length < slots && queue.length) { const q = queue.shift()!; busy.push({ start: q.start, end: now + Math.max(1, Math.round(q.cost * (1 + 0.5 * busy.length / slots))) }); }
        if (now >= ms - 5000 && now % 100 === 0) { limits.push(lim.limit); sat ||= lim.saturated; }
      }
      return { perSecond: served / 5, limit: mean(limits), sat };
    };
    const meanCost = MIX.reduce((a, b) => a + b, 0) / MIX.length;
    const eight = run(8, 400, 20_000);
    expect(eight.limit).toBeGreaterThanOrEqual(8);
    expect(eight.limit).toBeLessThanOrEqual(20);
    expect(eight.perSecond).toBeGreaterThan((8 * 1000) / (meanCost * 1.5) * 0.9);
    expect(eight.sat).toBe(true);
    const roomy = run(100, 60, 10_000);
    expect(roomy.sat).toBe(false);
    expect(roomy.limit).toBeGreaterThanOrEqual(60);
  });
});
