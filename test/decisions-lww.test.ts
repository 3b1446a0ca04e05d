// The later decision stands, whatever order the writes reach Redis in: a
// generated check of the write script (store/redis-write.ts) on a real
// redis-server. Decisions on a few addresses and a domain, each made at a
// distinct time by one of several nodes, are written in batches in a random
// order; Redis must end with the latest decision on each, refuse exactly the
// ones that were older than what it held, and publish only what it wrote.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { findRedisServer, redisSkipReason, startRedis, type RedisServer } from './helpers/redis.ts';
import { WRITE_LUA, writeArgs, writeKeys, writeOutcome } from '../src/store/redis-write.ts';
import { redisKeys, parseMessage, parseState, pendingKey } from '../src/store/redis-keys.ts';
import { Known, SCAN_COUNT, pruneBans, readState } from '../src/store/redis-resync.ts';
import type { BanEntry } from '../src/decisions/blacklist.ts';
import { decidedAt, type Decision } from '../src/decisions/bus.ts';

const hasRedis = findRedisServer() !== null;
const IPS = ['10.0.0.1', '10.0.0.2', '2001:db8::/64'];
const NOW = 1_800_000_000_000;

/** One decision on one of IPS (or the domain) made at `t`. */
const decision = fc.record({ what: fc.integer({ min: 0, max: 4 }), on: fc.integer({ min: 0, max: IPS.length - 1 }), reason: fc.constantFrom('a', 'b', 'c') })
  .map(({ what, on, reason }) => (t: number): Decision => {
    const ip = IPS[on];
    switch (what) {
      case 0: return { kind: 'ban', entry: { ip, reason, rule: 'rate', since: t, expiresAt: NOW + 3600_000 } };
      case 1: return { kind: 'unban', ip, at: t };
      case 2: return { kind: 'whitelist', entry: { ip, origin: 'api', note: reason, since: t } };
      case 3: return { kind: 'unwhitelist', ip, at: t };
      default: return { kind: 'attack', domain: 'x.test', under: reason !== 'c', since: t, reason, at: t };
    }
  });

describe.skipIf(!hasRedis)('the later decision stands (write script, real Redis)', () => {
  let redis: RedisServer;
  let raw: Redis, sub: Redis;
  beforeAll(async () => { redis = await startRedis(); raw = new Redis(redis.url); sub = new Redis(redis.url); });
  afterAll(async () => { raw?.disconnect(); sub?.disconnect(); await redis?.close(); });

  it('any order of writes ends with the latest decision on each address and domain', async () => {
    let run = 0;
    await fc.assert(fc.asyncProperty(
      // Distinct times (no ties), decisions, and how they are cut into batches in the order they arrive.
      fc.uniqueArray(fc.integer({ min: 1, max: 1_000_000 }), { minLength: 1, maxLength: 24 }).chain((times) =>
        fc.tuple(fc.constant(times), fc.array(decision, { minLength: times.length, maxLength: times.length }), fc.array(fc.integer({ min: 1, max: 4 }), { minLength: times.length, maxLength: times.length }))),
      async ([times, makers, cuts]) => {
        const k = redisKeys(`lww${++run}:`);
        const ds = times.map((t, i) => makers[i](NOW - 2_000_000 + t));
        const published: Decision[] = [];
        const onMsg = (_c: string, m: string) => { published.push(...(parseMessage(m)?.ds ?? [])); };
        await sub.subscribe(k.channel);
        sub.on('message', onMsg);
        // What a sequential model says: the latest time seen on each key; a decision older than it is stale.
        const latest = new Map<string, Decision>();
        const expectStale: Decision[] = [], expectPublished: Decision[] = [];
        const gotStale: Decision[] = [];
        for (let i = 0; i < ds.length;) {
          const batch = ds.slice(i, i + cuts[i]);
          for (const d of batch) {
            const key = pendingKey(d), cur = latest.get(key);
            if (cur && decidedAt(cur)! > decidedAt(d)!) expectStale.push(d);
            else { latest.set(key, d); expectPublished.push(d); }
          }
          const { args, ds: sent } = writeArgs(k, 'N', batch, NOW);
          const out = writeOutcome(sent, await raw.eval(WRITE_LUA, 5, ...writeKeys(k), ...args));
          expect(out.refused.size).toBe(0);
          gotStale.push(...out.stale);
          i += batch.length;
        }
        await raw.ping(); // messages published before this answer have reached the subscriber connection's socket
        await new Promise((r) => setTimeout(r, 20));
        sub.off('message', onMsg);
        await sub.unsubscribe(k.channel);
        expect(gotStale).toEqual(expectStale);
        expect(published).toEqual(expectPublished);
        const state = parseState(await raw.hgetall(k.bans), await raw.hgetall(k.wl), await raw.hgetall(k.attack), NOW);
        for (const ip of IPS) {
          const b = latest.get(`b:${ip}`), w = latest.get(`w:${ip}`);
          expect(state.bans.find((e) => e.ip === ip)).toEqual(b?.kind === 'ban' ? b.entry : undefined);
          expect(state.whitelist.find((e) => e.ip === ip)).toEqual(w?.kind === 'whitelist' ? w.entry : undefined);
        }
        const a = latest.get('a:x.test');
        expect(state.attacks[0]?.since).toBe(a?.kind === 'attack' ? a.since : undefined);
      },
    ), { numRuns: 150 });
  }, 60_000);

  const writeOne = async (k: ReturnType<typeof redisKeys>, d: Decision, now: number) => {
    const { args, ds } = writeArgs(k, 'N', [d], now);
    return writeOutcome(ds, await raw.eval(WRITE_LUA, 5, ...writeKeys(k), ...args));
  };

  it('a ban that ran out is remembered as lifted when it was made: an older ban arriving later does not come back', async () => {
    const k = redisKeys('expired:');
    const t = Date.now();
    await writeOne(k, { kind: 'ban', entry: { ip: '10.2.0.1', reason: 'B', rule: 'manual', since: t - 2000, expiresAt: t - 1000 } }, t - 1500);
    await pruneBans(raw, k, t);
    expect(await raw.hget(k.bans, '10.2.0.1')).toBeNull();
    // Made before B's (a node cut off since): older than what ran out.
    expect((await writeOne(k, { kind: 'ban', entry: { ip: '10.2.0.1', reason: 'A', rule: 'rate', since: t - 3000, expiresAt: t + 86_400_000 } }, t)).stale.size).toBe(1);
    expect(await raw.hget(k.bans, '10.2.0.1')).toBeNull();
    expect((await writeOne(k, { kind: 'ban', entry: { ip: '10.2.0.1', reason: 'C', rule: 'rate', since: t, expiresAt: t + 60_000 } }, t)).stale.size).toBe(0);
    expect(await raw.hget(k.bans, '10.2.0.1')).not.toBeNull();
  });

  it('the liftings remembered are bounded: past the latest GONE_MAX (here 3), the oldest are forgotten first', async () => {
    // Until 2026-11-29 every ban that ran out left its marker for 7 days, however many: a week of a large botnet's
    // bans was a marker per address in Redis.
    const k = redisKeys('gonecap:');
    const t = Date.now();
    for (let i = 0; i < 6; i++) await writeOne(k, { kind: 'ban', entry: { ip: `10.5.0.${i}`, reason: 'r', rule: 'rate', since: t - 10_000 + i, expiresAt: t - 1000 } }, t - 5000);
    await pruneBans(raw, k, t, 3);
    expect(await raw.zrange(k.gone, '0', '-1')).toEqual(['b:10.5.0.3', 'b:10.5.0.4', 'b:10.5.0.5']);
    expect(await raw.hlen(k.bans)).toBe(0);
  });

  it('a key of the wrong type refuses the decisions that use it before any of their writes; the rest is written', async () => {
    const k = redisKeys('wrongtype:');
    await raw.set(k.exp, 'not a sorted set');
    const ban: Decision = { kind: 'ban', entry: { ip: '10.3.0.1', reason: 'r', rule: 'rate', since: NOW, expiresAt: NOW + 60_000 } };
    const wl: Decision = { kind: 'whitelist', entry: { ip: '10.3.9.9', origin: 'api', note: '', since: NOW } };
    const { args, ds } = writeArgs(k, 'N', [ban, wl], NOW);
    const out = writeOutcome(ds, await raw.eval(WRITE_LUA, 5, ...writeKeys(k), ...args));
    expect([...out.refused]).toEqual([ban]);
    expect(await raw.hget(k.bans, '10.3.0.1')).toBeNull(); // nothing of it half-written
    expect(await raw.hget(k.wl, '10.3.9.9')).not.toBeNull();
  });

  it('read in steps (a catch-up while serving) or at once: the same state, a hash of the wrong type unknown either way', async () => {
    const k = redisKeys('steps:');
    const bans: Decision[] = Array.from({ length: 4500 }, (_, i) => ({ kind: 'ban', entry: { ip: `10.4.${i >> 8}.${i & 255}`, reason: 'r', rule: 'rate', since: NOW, expiresAt: NOW + 60_000 } }));
    for (let i = 0; i < bans.length; i += 1000) {
      const { args } = writeArgs(k, 'N', bans.slice(i, i + 1000), NOW);
      await raw.eval(WRITE_LUA, 5, ...writeKeys(k), ...args);
    }
    const { args } = writeArgs(k, 'N', [{ kind: 'whitelist', entry: { ip: '10.4.99.1', origin: 'api', note: 'n', since: NOW } }, { kind: 'attack', domain: 'x.test', under: true, since: NOW, reason: 'r', at: NOW }], NOW);
    await raw.eval(WRITE_LUA, 5, ...writeKeys(k), ...args);
    let steps = 0;
    const sorted = (x: Awaited<ReturnType<typeof readState>>) => ({ ...x, bans: [...x.bans].sort((a, b) => a.ip.localeCompare(b.ip)) });
    const atOnce = await readState(raw, k, NOW), inSteps = await readState(raw, k, NOW, async () => { steps++; });
    expect(inSteps.bans.length).toBe(4500);
    // 4500 bans at about 2000 a step (HSCAN's COUNT is a hint), then one step each for the whitelist and attack hashes.
    expect(steps).toBeGreaterThanOrEqual(5);
    expect(sorted(inSteps)).toEqual(sorted(atOnce));
    // Compared in steps too: a node that knew 3000 of them, 500 of those with another expiry, and 1000 bans since
    // lifted (plus 2 of this node's own, still queued, left alone).
    const known = new Known();
    for (let i = 0; i < 3000; i++) known.remember({ kind: 'ban', entry: { ...(bans[i] as { entry: BanEntry }).entry, expiresAt: NOW + (i < 500 ? 1 : 60_000) } });
    for (let i = 0; i < 1000; i++) known.remember({ kind: 'ban', entry: { ip: `10.5.${i >> 8}.${i & 255}`, reason: 'r', rule: 'rate', since: NOW, expiresAt: NOW + 60_000 } });
    const queued = (key: string) => key === 'b:10.5.0.7' || key === 'b:10.4.17.3';
    let diffSteps = 0;
    const byIp = (ds: Decision[]) => ds.map((d) => `${d.kind} ${'entry' in d ? d.entry.ip : 'ip' in d ? d.ip : d.domain}`).sort();
    const once = known.diff(inSteps, NOW, queued), stepped = await known.diffInSteps(inSteps, NOW, queued, async () => { diffSteps++; });
    expect(byIp(stepped)).toEqual(byIp(once));
    expect([once.filter((d) => d.kind === 'ban').length, once.filter((d) => d.kind === 'unban').length]).toEqual([2000 - 1, 1000 - 1]);
    expect(diffSteps).toBeGreaterThanOrEqual(Math.floor((4500 + 4000) / SCAN_COUNT));
    await raw.set(k.wl, 'not a hash');
    const broken = await readState(raw, k, NOW, async () => {});
    expect([broken.unreadable, broken.whitelist, broken.bans.length]).toEqual([['whitelist'], [], 4500]);
    expect((await readState(raw, k, NOW)).unreadable).toEqual(['whitelist']);
  });

  it('a decision that does not say when it was made (an older version) is written as it comes', async () => {
    const k = redisKeys('legacy:');
    const ban: Decision = { kind: 'ban', entry: { ip: '10.1.0.1', reason: 'r', rule: 'rate', since: NOW, expiresAt: NOW + 60_000 } };
    for (const batch of [[ban], [{ kind: 'unban', ip: '10.1.0.1' } as Decision]]) {
      const { args, ds } = writeArgs(k, 'N', batch, NOW);
      expect(writeOutcome(ds, await raw.eval(WRITE_LUA, 5, ...writeKeys(k), ...args)).stale.size).toBe(0);
    }
    expect(await raw.hget(k.bans, '10.1.0.1')).toBeNull();
  });
});

if (!hasRedis) describe('the later decision stands (write script, real Redis)', () => { it.skip(redisSkipReason, () => {}); });

describe('what a node writes back (Known.missingFrom)', () => {
  it('a part Redis could not give (a key of the wrong type) is unknown, not empty: nothing of it is written back', () => {
    const now = Date.now();
    const known = new Known({ bans: [{ ip: '10.2.0.1', reason: 'r', rule: 'rate', since: now, expiresAt: now + 60_000 }], whitelist: [{ ip: '10.2.1.0/24', origin: 'api', note: '', since: now }] });
    const empty = { bans: [], whitelist: [], attacks: [] };
    expect(known.missingFrom(empty, now).map((d) => d.kind).sort()).toEqual(['ban', 'whitelist']);
    expect(known.missingFrom({ ...empty, unreadable: ['bans'] }, now).map((d) => d.kind)).toEqual(['whitelist']);
    expect(known.missingFrom({ ...empty, unreadable: ['whitelist'] }, now).map((d) => d.kind)).toEqual(['ban']);
  });
});
