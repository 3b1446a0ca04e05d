import { describe, expect, it } from 'vitest';
import { ownLagTicker } from '../src/app/edge.ts';

describe("the proxy's own event-loop delay told to the origin guard", () => {
  it('an idle loop has no delay: the histogram\'s sampling interval (its resolution) is not counted as delay', async () => {
    // monitorEventLoopDelay records the whole interval between its timer's runs, resolution included: an idle loop
    // reads about 5 ms. The mean is taken off every fair-share sample (OriginGuard.sample), so that bias took ~5 ms
    // off every answer, and an origin answering in under 6 ms read as 1 ms for every request, cheap or dear.
    const told: number[][] = [];
    const t = ownLagTicker({ tick: (now: number, lag?: number, mean?: number) => { told.push([now, lag ?? 0, mean ?? 0]); } });
    try {
      await new Promise((r) => setTimeout(r, 300));
      t.step();
    } finally { t.stop(); }
    const [, , mean] = told[0];
    expect(mean).toBeLessThan(2);
    expect(mean).toBeGreaterThanOrEqual(0);
  });
});
