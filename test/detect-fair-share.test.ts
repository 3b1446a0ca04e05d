// Fair share of the origin per source, on a fake clock.
import { describe, it, expect } from 'vitest';
import { FairShare, type FairShareOptions } from '../src/detect/fair-share.ts';
import { SessionsSeen, scaledCap } from '../src/detect/sessions-seen.ts';

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
    // Keeps at it under saturation: persistent after persistMs (25 s by default, longer than the 20 s window).
    for (let t = 30_000; t <= 53_000; t += 1000) { run(fs, actors, t, t + 1000); fs.assess(t + 1000, 'bot', true); }
    expect(fs.assess(54_000, 'bot', true).persistent).toBe(false);
    for (let t = 54_000; t <= 55_000; t += 1000) { run(fs, actors, t, t + 1000); fs.assess(t + 1000, 'bot', true); }
    expect(fs.assess(56_000, 'bot', true).persistent).toBe(true);
  });

  it('one burst of expensive requests is no persistence: it leaves the window before the default ban time', () => {
    const burst = (persistMs?: number) => {
      const fs = new FairShare(persistMs ? { persistMs } : {});
      const ppl = people(30);
      run(fs, ppl, 0, 20_000);
      // A person runs six searches within two seconds, then browses as before; the origin stays saturated.
      for (let i = 0; i < 6; i++) fs.record(20_000 + i * 300, 'p0', 120);
      let persistent = false;
      for (let t = 20_000; t < 60_000; t += 1000) { run(fs, ppl, t, t + 1000); persistent ||= fs.assess(t + 1000, 'p0', true).persistent; }
      return persistent;
    };
    expect(burst()).toBe(false);
    // The old default (15 s), shorter than the 20 s window: the same person was banned for one burst.
    expect(burst(15_000)).toBe(true);
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
    // Every source is young here: each is measured as the typical one is (what it used), not one by its rate against
    // the others by what they used (a person would look four times itself).
    const ratios = Array.from({ length: 20 }, (_, i) => fs.assess(103_000, `p${i}`, true).ratio).sort((a, b) => a - b);
    expect(ratios[10]).toBeLessThan(2);
  });

  it('under pressure, the incumbents are the measure: bots that outnumber the people and came after them are over their share, the people are not', () => {
    const fs = new FairShare();
    const ppl = people(40);
    // Calm: the people browse; then 120 bots, each at five times a person's pace, and the origin saturates.
    run(fs, ppl, 0, 20_000);
    fs.notePressure(20_000, true);
    const bots = people(120, 'bot', 400);
    for (let t = 20_000; t < 40_000; t += 1000) {
      run(fs, [...ppl, ...bots], t, t + 1000);
      // The limit's verdict flips now and then under a steady attack: a blip of calm (here two readings a second apart)
      // is no end of the pressure.
      const blip = t % 5000 === 0;
      if (blip) fs.notePressure(t + 500, false);
      fs.notePressure(t + 1000, !blip);
    }
    expect(fs.pressureStart).toBe(20_000);
    for (const b of ['bot0', 'bot57', 'bot119']) expect(fs.assess(40_000, b, true).overShare, b).toBe(true);
    for (const p of ['p0', 'p13', 'p39']) expect(fs.assess(40_000, p, true).rankPenalty, p).toBe(0);
    // Among the sources with history (what was measured before), the typical source is a bot and none is over.
    const plain = new FairShare();
    run(plain, ppl, 0, 20_000);
    run(plain, [...ppl, ...bots], 20_000, 40_000);
    expect(plain.assess(40_000, 'bot0', true).overShare).toBe(false);
    // A window of calm ends the pressure; the next one has new incumbents.
    for (let t = 40_000; t <= 61_000; t += 1000) fs.notePressure(t, false);
    expect(fs.pressureStart).toBe(0);
    fs.notePressure(62_000, true);
    expect(fs.pressureStart).toBe(62_000);
  });

  it('judges a source by its pace: time held in the queue is taken out of its window, a quarter of the window at the least', () => {
    const fs = new FairShare();
    // Two sources use the same origin time; one of them spent half of the window waiting in the queue.
    for (let t = 0; t < 20_000; t += 1000) { fs.record(t, 'free', 50); fs.record(t, 'held', 50); }
    for (let t = 0; t < 20_000; t += 2000) { fs.hold(t, 'held'); fs.unhold(t + 1000, 'held'); }
    expect(fs.used(19_999, 'held')).toBe(fs.used(19_999, 'free'));
    expect(fs.demandOf(19_999, 'free')).toBeCloseTo(1000, 0);
    expect(fs.demandOf(19_999, 'held')).toBeCloseTo(2000, 0);
    // What a source spends from the newcomers' slice is what it used: typicalUse is not scaled to the pace.
    const five = new FairShare();
    for (let i = 0; i < 5; i++) for (let t = 0; t < 20_000; t += 1000) five.record(t, `u${i}`, 50);
    for (let i = 0; i < 5; i++) { five.hold(0, `u${i}`); five.unhold(10_000, `u${i}`); }
    expect(five.typicalUse(19_999)).toBeCloseTo(five.used(19_999, 'u0'), 0);
    expect(five.typical(19_999)).toBeGreaterThan(1.5 * five.used(19_999, 'u0'));
    // Two requests waiting at once count their overlap once; a wait still under way counts up to now.
    fs.hold(20_000, 'free'); fs.hold(20_500, 'free'); fs.unhold(21_000, 'free');
    const used = fs.used(22_000, 'free');
    expect(fs.demandOf(22_000, 'free')).toBeCloseTo(used * 20_000 / 18_000, 0);
    fs.unhold(22_000, 'free');
    expect(fs.demandOf(22_000, 'free')).toBeCloseTo(used * 20_000 / 18_000, 0);
    // Held nearly all the time: judged over a quarter of the window, not over nothing.
    fs.hold(22_000, 'held');
    expect(fs.demandOf(41_000, 'held')).toBe(4 * fs.used(41_000, 'held'));
    // A share is a rate: a source seen for half the window is judged over that half; a newcomer over a quarter at least
    // (a first page and its assets are no pace).
    fs.record(30_000, 'young', 100);
    expect(fs.demandOf(40_000, 'young')).toBe(200);
    expect(fs.demandOf(31_000, 'young')).toBe(400);
    // A source that never used the origin is not tracked, and a stray release changes nothing.
    fs.hold(1000, 'new'); fs.unhold(2000, 'new'); fs.unhold(2000, 'free');
    expect(fs.demandOf(2000, 'new')).toBe(0);
    expect(fs.size).toBe(3);
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
