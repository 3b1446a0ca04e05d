// The wiring of the origin guard (src/limits/origin-guard.ts) on a fake clock:
// each domain's fair queue follows its adaptive limit, saturation is what
// attack mode asks once a second, a source over its share of a saturated
// origin goes behind the others and is reported for a ban, and the queue serves
// the least used of the sources at the head of its line. A tiny origin model
// stands in for the application: a worker pool whose latency grows with the
// requests it is given (cost × max(1, in flight / slots)). Then the
// decisions that use it: stepAttack with a saturated sample, and the filter's
// banOverShare (mode, attack state, whitelist).
import type { SlotHolder } from '../src/limits/holders.ts';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { OriginGuard, type DomainOrigin } from '../src/limits/origin-guard.ts';
import { UpstreamQueue } from '../src/limits/upstream-queue.ts';
import { newAttackState, stepAttack, type AttackParams, type Sample } from '../src/detect/attack-mode.ts';
import { loadConfigObject } from '../src/config/load.ts';
import type { Config, DomainConfig } from '../src/config/schema.ts';

function config(over: Record<string, unknown> = {}, domainOver: Record<string, unknown> = {}): Config {
  const r = loadConfigObject({ log: { level: 'silent' }, domains: [{ name: 'site.test', upstreams: ['127.0.0.1:9'], ...domainOver }], ...over }, {});
  if (!r.ok) throw new Error(r.problems.join('\n'));
  return r.config;
}

/** One kind of client: `count` of them, each thinking thinkMs between its answer and its next request, each request costing costMs at an idle origin. */
interface Actor { prefix: string; count: number; thinkMs: number; /** One cost, or a mix taken in turn (pages, assets, searches). */ costMs: number | number[]; from?: number; rotate?: boolean; /** Actors share this many addresses (several requests at once from one). */ sources?: number }

interface Sim { t: number; guard: OriginGuard; d: DomainOrigin; bans: { source: string; reason: string }[]; served: Map<string, number>; waits: Map<string, number[]> }

/** Runs actors against the guard and an origin of `slots` workers from sim.t for ms; returns per-second saturation as attack mode reads it. */
function run(sim: Sim, actors: Actor[], slots: number, ms: number): boolean[] {
  const { guard, d } = sim;
  const running: { source: string; end: number; start: number }[] = [];
  const next: { source: string; at: number; actor: Actor; i: number }[] = [];
  // Each client goes through its own mix in turn (one shared counter would hand one client every search, in lockstep).
  const turns = new Map<string, number>();
  const costOf = (a: Actor, client: string) => {
    if (typeof a.costMs === 'number') return a.costMs;
    const n = turns.get(client) ?? client.length * 7 + client.charCodeAt(client.length - 1);
    turns.set(client, n + 1);
    return a.costMs[n % a.costMs.length];
  };
  let seq = 0;
  for (const a of actors) for (let i = 0; i < a.count; i++) next.push({ source: `${a.prefix}${i % (a.sources ?? a.count)}`, at: sim.t + (a.from ?? 0) + ((i * 37) % Math.max(1, a.thinkMs)), actor: a, i });
  const seconds: boolean[] = [];
  const dispatch = (c: (typeof next)[number], queuedAt: number) => () => {
    const load = d.queue.active;
    const w = sim.waits.get(c.actor.prefix) ?? [];
    w.push(sim.t - queuedAt);
    sim.waits.set(c.actor.prefix, w);
    const cost = costOf(c.actor, `${c.actor.prefix}#${c.i}`);
    running.push({ source: c.source, start: sim.t, end: sim.t + Math.max(1, Math.round(cost * Math.max(1, load / slots))) });
    (running[running.length - 1] as unknown as { c: typeof c }).c = c;
  };
  const end = sim.t + ms;
  for (; sim.t < end; sim.t++) {
    for (let i = running.length - 1; i >= 0; i--) {
      const r = running[i];
      if (r.end > sim.t) continue;
      running.splice(i, 1);
      sim.served.set(r.source, (sim.served.get(r.source) ?? 0) + 1);
      // As the flow does at the response headers: sample, then give the slot back.
      guard.sample(d, r.source, sim.t - r.start, false);
      d.queue.leave();
      const c = (r as unknown as { c: (typeof next)[number] }).c;
      next.push({ ...c, source: c.actor.rotate ? `${c.actor.prefix}${c.i}.${++seq}` : c.source, at: sim.t + c.actor.thinkMs });
    }
    for (let i = next.length - 1; i >= 0; i--) {
      const c = next[i];
      if (c.at > sim.t) continue;
      next.splice(i, 1);
      if (d.queue.tryEnter()) dispatch(c, sim.t)();
      // Rotating sources are unknown (1); the others have browsed for a while (0); over their share, behind everyone (2).
      else d.queue.wait(c.source, guard.rankFloor(d, c.source) ? 2 : c.actor.rotate ? 1 : 0, dispatch(c, sim.t), () => next.push({ ...c, at: sim.t + 1000 }));
    }
    if ((sim.t + 1) % 1000 === 0) seconds.push(guard.takeSaturated('site.test', sim.t) === true);
  }
  return seconds;
}

function newSim(cfg = config()): Sim {
  const sim = { t: 1_000_000 } as Sim;
  sim.bans = [];
  sim.served = new Map();
  sim.waits = new Map();
  sim.guard = new OriginGuard(cfg, { now: () => sim.t, onOverShare: (source, _d, reason) => sim.bans.push({ source, reason }) });
  sim.d = sim.guard.of(cfg.domains[0] as DomainConfig);
  return sim;
}

/** Seconds until attack mode (defaults) would start on these saturation readings, or null. */
function enteredAfter(seconds: boolean[]): number | null {
  let hot = 0;
  for (let i = 0; i < seconds.length; i++) { hot = seconds[i] ? hot + 1 : 0; if (hot >= 2) return i + 1; }
  return null;
}

describe('origin guard: the adaptive limit drives the fair queue', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.clearAllTimers(); vi.useRealTimers(); });

  it('every domain gets a learned limit by default; maxInflight is its ceiling; adaptive off leaves maxInflight alone', () => {
    const a = newSim();
    expect(a.d.limit).not.toBeNull();
    expect(a.d.queue.limit).toBe(20);
    const b = newSim(config({}, { maxInflight: 4 }));
    expect(b.d.queue.limit).toBe(4);
    const c = newSim(config({ limits: { adaptive: { enabled: false } } }));
    expect(c.d.limit).toBeNull();
    expect(c.d.queue.limit).toBe(0);
    expect(c.guard.takeSaturated('site.test', c.t)).toBeNull();
  });

  it('a reload moves the ceiling, the floor and the fair-share lines, keeps what was learned, and can turn the learned limit off', () => {
    const sim = newSim(config({}, { maxInflight: 4 }));
    expect(sim.d.queue.limit).toBe(4);
    const learned = sim.d.limit;
    // The ceiling raised: a limit held down by it goes up to the start value at once.
    sim.guard.reconfigure(config({ limits: { adaptive: { minLimit: 2 } }, filter: { fairShare: { overShareRatio: 6, banAfterSeconds: 30 } } }, { maxInflight: 50 }));
    expect(sim.d.limit).toBe(learned);
    expect(sim.d.queue.limit).toBe(20);
    expect(sim.d.limit!.opts.minLimit).toBe(2);
    expect(sim.d.share.opts.overShareRatio).toBe(6);
    expect(sim.d.share.opts.persistMs).toBe(30_000);
    sim.guard.reconfigure(config({ limits: { adaptive: { enabled: false } } }, { maxInflight: 7 }));
    expect(sim.d.limit).toBeNull();
    expect(sim.d.queue.limit).toBe(7);
    // A domain that is gone keeps counting its last requests out, with no cap.
    sim.guard.reconfigure(config({}, { name: 'other.test' }));
    expect(sim.d.queue.limit).toBe(0);
  });

  it('a domain a reload removed is forgotten once its last request is out (its fair share held megabytes); one back gets a fresh part', () => {
    const guard = new OriginGuard(config(), { now: () => 0, onOverShare: () => {} });
    const site = config().domains[0] as DomainConfig;
    const d = guard.of(site);
    expect(d.queue.tryEnter()).toBe(true);
    guard.reconfigure(config({}, { name: 'other.test' }));
    guard.tick(0);
    expect(guard.peek('site.test')).toBe(d);
    expect(guard.queues.has('site.test')).toBe(true);
    d.queue.leave();
    guard.tick(250);
    expect(guard.peek('site.test')).toBeUndefined();
    expect(guard.queues.has('site.test')).toBe(false);
    // Back in the config: a part of its own, not the one that was dropped.
    guard.reconfigure(config());
    expect(guard.of(site)).not.toBe(d);
  });

  it('started in the middle of a rotating flood, says saturated soon enough for attack mode within 5 s, and holds the origin near its slots', () => {
    const sim = newSim();
    // 400 clients keeping a request each outstanding, a new address for every request; an origin of 8 workers.
    const secs = run(sim, [{ prefix: 'a', count: 400, thinkMs: 0, costMs: 10, rotate: true }], 8, 8000);
    const entered = enteredAfter(secs);
    expect(entered, JSON.stringify(secs)).not.toBeNull();
    expect(entered!).toBeLessThanOrEqual(5);
    expect(sim.d.queue.limit).toBeLessThanOrEqual(24);
    expect(sim.d.queue.queued).toBeGreaterThan(100);
  });

  it('a flash crowd the origin can serve never reads as saturated, even while the limit grows to it', () => {
    const sim = newSim();
    // 300 new visitors within 3 s, a page every 0.5 s at 20 ms: ~12 requests at once against an origin of 64 workers.
    const secs = run(sim, [{ prefix: 'p', count: 40, thinkMs: 2000, costMs: 10 }, { prefix: 'c', count: 300, thinkMs: 500, costMs: 20, from: 1000 }], 64, 10_000);
    expect(secs.some((s) => s), JSON.stringify(secs)).toBe(false);
    // A crowd that outgrows the start value: the limit follows it, and nothing waits long.
    const big = newSim();
    const secs2 = run(big, [{ prefix: 'c', count: 600, thinkMs: 300, costMs: 20 }], 200, 10_000);
    expect(secs2.some((s) => s), JSON.stringify(secs2)).toBe(false);
    expect(big.d.queue.limit).toBeGreaterThan(40);
  });

  it('a mix of cheap and expensive requests is not read as load: a crowd the origin serves with room to spare is not saturated', () => {
    const sim = newSim();
    // The lab's shop: pages 8 ms, assets 1 ms, now and then a 120 ms search; 400 visitors, a page and its assets every ~2 s:
    // about a third of an 8-worker origin, in bursts (a page brings its assets).
    const mix = [8, 1, 1, 1, 1, 1, 8, 1, 1, 120, 8, 1, 1, 1, 1, 1];
    const secs = run(sim, [{ prefix: 'c', count: 400, thinkMs: 2000, costMs: mix }], 8, 15_000);
    expect(secs.some((x) => x), JSON.stringify(secs)).toBe(false);
    expect(sim.d.queue.limit).toBeGreaterThanOrEqual(20);
  });

  it('patient bots outnumbering the people: people are served first (the least used in line go first), the bots wait', () => {
    const p95 = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length * 0.95)];
    const waits = (fairShare: boolean) => {
      const sim = newSim(config({ filter: { fairShare: { enabled: fairShare } } }));
      // 60 people: a cheap page every 2 s; 80 bots: an expensive search every 300 ms; an origin of 8 workers (far too few for the bots).
      run(sim, [{ prefix: 'p', count: 60, thinkMs: 2000, costMs: 8 }, { prefix: 'b', count: 80, thinkMs: 300, costMs: 120 }], 8, 30_000);
      expect(sim.d.saturatedAt(sim.t)).toBe(true);
      return { sim, people: p95(sim.waits.get('p')!.slice(-300)), bots: p95(sim.waits.get('b')!.slice(-300)) };
    };
    const fair = waits(true), plain = waits(false);
    // Plain round robin between sources gives the bots most turns: people wait about as long as they do.
    expect(plain.people).toBeGreaterThan(plain.bots / 3);
    expect(fair.people).toBeLessThan(fair.bots / 3);
    expect(fair.people).toBeLessThan(plain.people / 3);
    const sim = fair.sim;
    // Most sources are bots: the typical share is a bot's, so none is over it and none is reported (the queue order is what protects people).
    expect(sim.bans.filter((b) => b.source.startsWith('p'))).toEqual([]);
  });

  it('patient bots outnumbering the people, arriving after them: the people are the measure, the persistent bots are reported, no person', () => {
    const sim = newSim();
    const ppl: Actor = { prefix: 'p', count: 60, thinkMs: 2000, costMs: [8, 1, 1, 1, 8, 120, 8, 1, 1, 1] };
    // After 10 s, 120 bots, each a browser navigating five times faster than a person, mostly on the search; the origin is far too small.
    run(sim, [ppl, { prefix: 'b', count: 120, thinkMs: 400, costMs: [120, 120, 8, 120, 120, 120, 8], from: 10_000 }], 8, 50_000);
    expect(sim.d.saturatedAt(sim.t)).toBe(true);
    const banned = new Set(sim.bans.map((b) => b.source));
    expect([...banned].filter((x) => x.startsWith('p'))).toEqual([]);
    expect([...banned].filter((x) => x.startsWith('b')).length).toBeGreaterThanOrEqual(100);
    expect(sim.bans[0].reason).toMatch(/asked for .* of origin time in 20\.0 s \(at its pace when not held in the queue\), \d+\.\d× a typical source's/);
  });

  it('a flash crowd of new visitors that saturates the origin for a while: behind the incumbents but none over its share, none reported', () => {
    const sim = newSim();
    const mix = [8, 1, 1, 1, 8, 120, 8, 1, 1, 1];
    // After 10 s, ten times as many people arrive at once; each browses as the others do, the origin cannot keep up with them all.
    const secs = run(sim, [{ prefix: 'p', count: 40, thinkMs: 2000, costMs: mix }, { prefix: 'c', count: 400, thinkMs: 2000, costMs: mix, from: 10_000 }], 2, 40_000);
    expect(secs.filter((x) => x).length, JSON.stringify(secs)).toBeGreaterThan(20);
    expect(sim.bans).toEqual([]);
  });

  it('a few heavy sources among many people: over their share of the saturated origin they go behind the others, and persistent ones are reported', () => {
    const sim = newSim();
    // 60 people; 6 bots each keeping 4 expensive requests going; 2 workers.
    run(sim, [{ prefix: 'p', count: 60, thinkMs: 2000, costMs: 8 }, { prefix: 'b', count: 24, sources: 6, thinkMs: 50, costMs: 120 }], 2, 30_000);
    expect(sim.d.saturatedAt(sim.t)).toBe(true);
    expect(sim.guard.rankFloor(sim.d, 'b0')).toBe(2);
    expect(sim.guard.rankFloor(sim.d, 'p3')).toBe(0);
    // What attack mode asks of the sources whose requests waited: heavy ones are no crowd.
    expect(sim.guard.heavy('site.test', 'b0')).toBe(true);
    expect(sim.guard.heavy('site.test', 'p3')).toBe(false);
    const banned = new Set(sim.bans.map((b) => b.source));
    expect([...banned].sort()).toEqual(['b0', 'b1', 'b2', 'b3', 'b4', 'b5']);
    expect(sim.bans[0].reason).toMatch(/origin time in 20\.0 s .*, \d+\.\d× a typical source's .* while the origin was saturated/);
  });

  it('nothing is judged while the origin keeps up: a heavy source on an idle origin is neither ranked down nor reported', () => {
    const sim = newSim();
    run(sim, [{ prefix: 'p', count: 20, thinkMs: 2000, costMs: 8 }, { prefix: 'b', count: 1, thinkMs: 100, costMs: 120 }], 64, 30_000);
    expect(sim.bans).toEqual([]);
    expect(sim.guard.rankFloor(sim.d, 'b0')).toBe(0);
  });
});

describe('origin guard: what a source used of the origin', () => {
  it("the proxy's own event-loop delay is no origin time: a source's share counts its answers less the loop's mean delay", () => {
    // Under attack the proxy's own loop is busy: every answer is read that much later, cheap ones as much as dear ones,
    // which would squeeze every source's share towards the same value (a bot at four times a person's pace measured
    // at three). Answers timed at 50 ms with a mean delay of 40 ms are 10 ms of the origin's time.
    const sim = newSim();
    sim.guard.tick(0, 60, 40);
    for (let i = 0; i < 10; i++) { sim.t += 100; sim.guard.sample(sim.d, 'a', 50, false); }
    expect(sim.d.share.used(sim.t, 'a')).toBeCloseTo(100, 5);
    // Never below 1 ms an answer; with no delay told, all of it counts.
    for (let i = 0; i < 10; i++) { sim.t += 100; sim.guard.sample(sim.d, 'b', 20, false); }
    expect(sim.d.share.used(sim.t, 'b')).toBeCloseTo(10, 5);
    sim.guard.tick(0, 0, 0);
    for (let i = 0; i < 10; i++) { sim.t += 100; sim.guard.sample(sim.d, 'c', 50, false); }
    expect(sim.d.share.used(sim.t, 'c')).toBeCloseTo(500, 5);
  });
});

describe('origin guard: requests that outlive every answer', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.clearAllTimers(); vi.useRealTimers(); });

  it('while requests wait, those in flight far longer than answers take give their places back; not while nothing waits', () => {
    const sim = newSim();
    const { d, guard } = sim;
    const gone: number[] = [];
    const hold = (sentAt: number, id: number) => {
      expect(d.queue.tryEnter()).toBe(true);
      const h: SlotHolder = { sentAt, prevHolder: null, nextHolder: null, outlived: () => { gone.push(id); d.holders.delete(h); d.queue.leave(); } };
      d.holders.add(h);
    };
    // Twenty long polls sent at 0..19 ms (performance.now() clock), the limit full.
    for (let i = 0; i < 20; i++) hold(i, i);
    guard.tick(5000);
    expect(gone).toEqual([]); // nothing waits: nothing to give back
    let ran = 0;
    d.queue.wait('127.0.0.9', 1, () => ran++, () => {});
    guard.tick(900);
    expect(gone).toEqual([]); // under a second: any answer might take that long
    guard.tick(1012);
    expect(gone).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(ran).toBe(1);
    expect(d.queue.active).toBe(9);
  });

  it('a saturated origin keeps every request it was given counted, however long it takes', () => {
    const sim = newSim();
    run(sim, [{ prefix: 'a', count: 400, thinkMs: 0, costMs: 10, rotate: true }], 8, 5000);
    expect(sim.d.limit!.saturated).toBe(true);
    const gone: number[] = [];
    sim.d.holders.add({ sentAt: 0, prevHolder: null, nextHolder: null, outlived: () => gone.push(1) });
    expect(sim.d.queue.queued).toBeGreaterThan(0);
    sim.guard.tick(60_000);
    expect(gone).toEqual([]);
  });

  it('an origin that answers slowly under load moves the line with it (the limit still holds an overloaded origin)', () => {
    const sim = newSim();
    // Answers take about 400 ms now: the line is 10 × that, not the one-second floor.
    for (let t = 0; t < 3000; t += 5) sim.guard.sample(sim.d, 'a', 400, false), (sim.t += 5);
    expect(sim.d.limit!.shortRttMs).toBeGreaterThan(300);
    const gone: number[] = [];
    for (let i = 0; i < sim.d.queue.limit; i++) { sim.d.queue.tryEnter(); const h: SlotHolder = { sentAt: 0, prevHolder: null, nextHolder: null, outlived: () => gone.push(i) }; sim.d.holders.add(h); }
    sim.d.queue.wait('x', 1, () => {}, () => {});
    sim.guard.tick(2000);
    expect(gone).toEqual([]);
    sim.guard.tick(4100);
    expect(gone.length).toBeGreaterThan(0);
  });
});

describe('the fair queue with a usage measure', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.clearAllTimers(); vi.useRealTimers(); });

  it('serves the least used of the first sources with a history in line; among unknown ones, and without a measure, plain round robin', () => {
    const used: Record<string, number> = { bot1: 900, bot2: 800, person: 10, bot3: 700 };
    for (const [usage, cls, want] of [[(s: string) => used[s], 0, ['person', 'bot3', 'bot2', 'bot1']], [null, 0, ['bot1', 'bot2', 'person', 'bot3']], [(s: string) => used[s], 1, ['bot1', 'bot2', 'person', 'bot3']]] as const) {
      const q = new UpstreamQueue(1, 1000, 100, usage);
      const log: string[] = [];
      q.tryEnter();
      for (const s of ['bot1', 'bot2', 'person', 'bot3']) q.wait(s, cls, () => log.push(s), () => {});
      for (let i = 0; i < 4; i++) q.leave();
      expect(log).toEqual(want);
    }
  });
});

describe('attack mode reads saturation', () => {
  const params: AttackParams = { minRps: 20, rateFactor: 4, latencyFactor: 4, minLatencyMs: 500, errorRatio: 0.1, enterSeconds: 2, exitSeconds: 5, learnSeconds: 300 };
  const sample = (o: Partial<Sample>): Sample => ({ requests: 100, answered: 100, latencySumMs: 100 * 20, upstreamErrors: 0, queued: 0, seconds: 1, ...o });

  it('a saturated origin starts attack mode with no baseline learned, and tightens the filter', () => {
    const st = newAttackState();
    expect(stepAttack(st, sample({ saturated: true, queued: 80 }), params, 1000).entered).toBe(false);
    const s = stepAttack(st, sample({ saturated: true, queued: 80 }), params, 2000);
    expect(s.entered).toBe(true);
    expect(s.failingStarted).toBe(true);
    expect(st.learned).toBe(0);
    expect(st.reason).toMatch(/origin saturated/);
  });

  it('a saturated origin whose waiting requests come from sources browsing like people (pages and their assets) is a crowd, not an attack', () => {
    const crowd = newAttackState();
    for (let i = 0; i < 5; i++) expect(stepAttack(crowd, sample({ saturated: true, queued: 80, queuedBrowsing: 60 }), params, i * 1000).entered).toBe(false);
    // The same with a flood of sources that fetch no assets among them: an attack.
    const flood = newAttackState();
    stepAttack(flood, sample({ saturated: true, queued: 80, queuedBrowsing: 10 }), params, 0);
    expect(stepAttack(flood, sample({ saturated: true, queued: 80, queuedBrowsing: 10 }), params, 1000).entered).toBe(true);
  });

  it('with an adaptive limit, waiting alone is no sign (the limit may be growing to a flash crowd); without one, it still is', () => {
    const a = newAttackState();
    for (let i = 0; i < 5; i++) expect(stepAttack(a, sample({ saturated: false, queued: 90 }), params, i * 1000).entered).toBe(false);
    const b = newAttackState();
    stepAttack(b, sample({ saturated: null, queued: 90 }), params, 0);
    expect(stepAttack(b, sample({ saturated: null, queued: 90 }), params, 1000).entered).toBe(true);
  });

  it('upstream failures count from one in ten, but never fewer than three in a second', () => {
    const a = newAttackState();
    for (let i = 0; i < 5; i++) expect(stepAttack(a, sample({ requests: 10, upstreamErrors: 2 }), params, i * 1000).entered).toBe(false);
    const b = newAttackState();
    stepAttack(b, sample({ requests: 40, upstreamErrors: 4 }), params, 0);
    expect(stepAttack(b, sample({ requests: 40, upstreamErrors: 4 }), params, 1000).entered).toBe(true);
    expect(b.reason).toBe('upstream failing');
  });
});
