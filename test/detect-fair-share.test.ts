// Fair share of the origin per source, on a fake clock.
import { describe, it, expect } from 'vitest';
import { FairShare, SessionsSeen, scaledCap, type FairShareOptions } from '../src/detect/fair-share.ts';

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

describe('sessions seen behind an address', () => {
  it('counts distinct sessions that came back, within the window, and feeds the fair share', () => {
    const seen = new SessionsSeen({ windowMs: 60_000 });
    for (let i = 0; i < 40; i++) { seen.record(0, 'nat', `tok${i}`); seen.record(1000, 'nat', `tok${i}`); }
    for (let i = 0; i < 500; i++) seen.record(2000, 'nat', `farmed${i}`); // fetched once, never used
    seen.record(0, 'solo', 'a'); seen.record(10, 'solo', 'a');
    expect(seen.count(5000, 'nat')).toBeLessThanOrEqual(40);
    expect(seen.count(5000, 'solo')).toBe(1);
    expect(seen.count(5000, 'unknown')).toBe(1);
    expect(seen.count(120_000, 'nat')).toBe(1);
    const fs = new FairShare({ sessionsBehind: (s) => seen.count(5000, s) });
    fs.record(0, 'x', 1);
    expect(fs.assess(0, 'x', true).sessions).toBe(1);
  });
  it('a NAT keeps its 40 sessions counted when no farming pushes them out', () => {
    const seen = new SessionsSeen();
    for (let r = 0; r < 3; r++) for (let i = 0; i < 40; i++) seen.record(r * 1000, 'nat', `tok${i}`);
    expect(seen.count(3000, 'nat')).toBe(40);
  });
  it('keeps memory bounded', () => {
    const seen = new SessionsSeen({ maxSources: 100, maxPerSource: 8 });
    for (let i = 0; i < 10_000; i++) seen.record(i, `s${i % 500}`, `t${i}`);
    expect(seen.size).toBe(100);
  });
  it('raises a per-source cap by the sessions behind it, bounded', () => {
    expect(scaledCap(64, 1)).toBe(64);
    expect(scaledCap(64, 40)).toBe(2560);
    expect(scaledCap(10, 1000, 64)).toBe(640);
    expect(scaledCap(10, 0)).toBe(10);
  });
});
