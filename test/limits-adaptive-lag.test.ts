// The proxy's own event-loop lag is not the origin's latency: every sample is
// timed in the proxy's loop, so a proxy busy with its own work (the throughput
// bench: 64 connections on a fast origin, one core) read its lag as the
// origin's and shrank the limit, queueing requests it could have sent. With the
// lag told (AdaptiveLimit.ownLagMs, from the edge's event-loop delay monitor),
// the limit keeps growing; a saturated origin (far above lag + no-load) still
// shrinks it. Fake clock, no sockets.
import { describe, expect, it } from 'vitest';
import { AdaptiveLimit } from '../src/limits/adaptive-limit.ts';

/** Runs `seconds` of demand `demand` against an origin answering in `rtt(inflight)` ms; returns the limit. */
function run(lim: AdaptiveLimit, seconds: number, demand: number, rtt: (inflight: number) => number, t0 = 0): number {
  let now = t0;
  for (let step = 0; step < seconds * 100; step++) {
    now += 10;
    const inflight = Math.min(demand, lim.limit);
    for (let i = 0; i < inflight; i++) lim.onSample(now, rtt(inflight), inflight, false, Math.max(0, demand - inflight));
  }
  return lim.limit;
}

describe('the adaptive limit and the proxy\'s own lag', () => {
  // An origin that answers in 0.3 ms unloaded; the proxy's own loop adds 4 ms to every sample (busy proxy).
  const busyProxy = () => 0.3 + 4;

  it('without the lag told, a busy proxy shrinks the limit of an origin that is not loaded at all', () => {
    const lim = new AdaptiveLimit({ initialLimit: 20 });
    run(lim, 1, 10, () => 0.3); // the no-load latency learned, the limit not yet grown (10 in flight: never binding)
    expect(run(lim, 10, 64, busyProxy, 1000)).toBeLessThan(20);
  });

  it('with the lag told, the limit grows to the demand', () => {
    const lim = new AdaptiveLimit({ initialLimit: 20 });
    run(lim, 1, 10, () => 0.3); // the no-load latency learned, the limit not yet grown (10 in flight: never binding)
    lim.ownLagMs = 4;
    expect(run(lim, 10, 64, busyProxy, 1000)).toBeGreaterThanOrEqual(64);
  });

  it('a saturated origin still shrinks it, lag told or not', () => {
    const lim = new AdaptiveLimit({ initialLimit: 20 });
    run(lim, 1, 10, () => 0.3); // the no-load latency learned, the limit not yet grown (10 in flight: never binding)
    lim.ownLagMs = 4;
    // Past 16 in flight the origin queues: 100 ms and more.
    expect(run(lim, 10, 64, (n) => (n > 16 ? 100 + (n - 16) * 10 : 0.3) + 4, 1000)).toBeLessThanOrEqual(24);
  });

  it('answers read a little more than one loop delay late (a saturated proxy, not origin) are not saturation', () => {
    // Measured: two workers on one core under clean load, p90 loop delay 15.5 ms, an origin answering in 1.5 ms, and
    // answers read 18–25 ms after dispatch (a request waits for its turn out and its answer for its turn in).
    const lim = new AdaptiveLimit({ initialLimit: 20 });
    run(lim, 1, 10, () => 1.5);
    lim.ownLagMs = 15.5;
    let saturated = false;
    for (let s = 0; s < 10; s++) { run(lim, 1, 200, () => 1.5 + 15.5 * 1.4, 1000 + s * 1000); saturated ||= lim.saturated; }
    expect(saturated).toBe(false);
    expect(lim.limit).toBeGreaterThanOrEqual(200);
  });
});
