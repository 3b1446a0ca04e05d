// Fair share of the origin per source, on a fake clock.
import { describe, it, expect } from 'vitest';
import { FairShare, type FairShareOptions } from '../src/detect/fair-share.ts';

// A person's pages: mostly cheap pages, now and then the expensive search (origin ms per request).
const COSTS = [8, 8, 120, 8, 8, 5, 8, 8, 8, 40];

interface Actor { source: string; everyMs: number; phase: number; n: number }
/** Runs the actors from `from` to `to` (ms); each records the origin time of its next request every everyMs. */
function run(fs: FairShare, actors: Actor[], from: number, to: number): void {
  for (let t = from; t < to; t += 10) {
    for (const a of actors) if ((t + a.phase) % a.everyMs === 0) fs.record(t, a.source, COSTS[a.n++ % COSTS.length]);
  }
}
const people = (n: number, prefix = 'p', everyMs = 2000): Actor[] => Array.from({ length: n }, (_, i) => ({ source: `${prefix}${i}`, everyMs, phase: (i * 370) % everyMs - ((i * 370) % everyMs) % 10, n: i % COSTS.length }));

describe('fair share', () => {
  it('a browser-perfect bot at five times a person\'s pace loses its share under saturation, and persists into a ban', () => {
    const fs = new FairShare();
    const actors = [...people(30), { source: 'bot', everyMs: 400, phase: 0, n: 0 }];
    run(fs, actors, 0, 30_000);
    const bot = fs.assess(30_000, 'bot', true);
    expect(bot.ratio).toBeGreaterThanOrEqual(4);
    expect(bot.overShare).toBe(true);
    expect(bot.rankPenalty).toBe(2);
    expect(bot.persistent).toBe(false);
    for (const p of ['p0', 'p7', 'p29']) {
      const v = fs.assess(30_000, p, true);
      expect(v.overShare, p).toBe(false);
      expect(v.rankPenalty, p).toBe(0);
    }
    // Keeps at it under saturation: persistent after persistMs.
    for (let t = 30_000; t <= 46_000; t += 1000) { run(fs, actors, t, t + 1000); fs.assess(t + 1000, 'bot', true); }
    expect(fs.assess(47_000, 'bot', true).persistent).toBe(true);
  });

  it('judges nothing while the origin is not saturated', () => {
    const fs = new FairShare();
    run(fs, [...people(30), { source: 'bot', everyMs: 400, phase: 0, n: 0 }], 0, 30_000);
    const v = fs.assess(30_000, 'bot', false);
    expect(v.ratio).toBeGreaterThanOrEqual(4);
    expect(v.overShare).toBe(false);
    expect(v.rankPenalty).toBe(0);
    expect(v.persistent).toBe(false);
  });

  it('people behind one NAT get their share multiplied by the sessions seen from it', () => {
    const sessions = new Map([['nat', 40]]);
    const opts: FairShareOptions = { sessionsBehind: (s) => sessions.get(s) ?? 1 };
    const fs = new FairShare(opts);
    // 40 people on one address, each at a person's pace, next to 30 people on their own addresses.
    const nat: Actor[] = people(40, 'n').map((a) => ({ ...a, source: 'nat' }));
    run(fs, [...people(30), ...nat], 0, 30_000);
    const v = fs.assess(30_000, 'nat', true);
    expect(v.sessions).toBe(40);
    expect(v.overShare).toBe(false);
    expect(v.rankPenalty).toBe(0);
    // Without the sessions count the same address would look like a bot.
    const fs2 = new FairShare();
    run(fs2, [...people(30), ...nat], 0, 30_000);
    expect(fs2.assess(30_000, 'nat', true).overShare).toBe(true);
  });

  it('with no source having history (started mid-attack), compares with every active source', () => {
    const fs = new FairShare();
    const actors = [...people(20, 'p', 1000), ...people(3, 'fast', 100)];
    run(fs, actors, 100_000, 103_000);
    expect(fs.assess(103_000, 'fast1', true).overShare).toBe(true);
    expect(fs.assess(103_000, 'p3', true).overShare).toBe(false);
  });

  it('forgets old use: the window slides', () => {
    const fs = new FairShare({ windowMs: 10_000 });
    fs.record(0, 'a', 500);
    expect(fs.used(5000, 'a')).toBe(500);
    expect(fs.used(10_500, 'a')).toBe(0);
    fs.record(20_000, 'a', 7);
    expect(fs.used(20_000, 'a')).toBe(7);
  });

  it('keeps memory bounded whatever the number of sources', () => {
    const fs = new FairShare({ maxSources: 1000 });
    for (let i = 0; i < 100_000; i++) fs.record(i, `r${i}`, 5);
    expect(fs.size).toBe(1000);
    expect(fs.used(100_000, 'r0')).toBe(0);
    expect(fs.used(99_999, 'r99999')).toBe(5);
    expect(fs.typical(100_000)).toBe(5);
  });
});
