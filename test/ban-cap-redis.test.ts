// filter.maxBans with other processes and nodes. The cap is each process's own (not a decision for the cluster), so:
// - what this node remembers of the cluster's bans (the Redis bus's base for catching up) forgets what the cap lifted:
//   with Redis it used to hold every ban until its end, whatever the cap (memory bounded only without Redis);
// - an operator's unban of a source this process lifted early is still told to every process and node (they may
//   hold it): it used to be dropped, as "not banned here", and the source stayed banned everywhere else.
// A real redis-server on loopback (skipped, saying so, where it is not installed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Decisions } from '../src/decisions/decisions.ts';
import { RedisBus } from '../src/store/redis-bus.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { openStore } from '../src/store/db.ts';
import { createLogger } from '../src/log.ts';
import type { Decision } from '../src/decisions/bus.ts';
import { tempDir } from './helpers/servers.ts';
import { findRedisServer, redisSkipReason, startRedis, type RedisServer } from './helpers/redis.ts';

const haveRedis = findRedisServer() !== null;
if (!haveRedis) console.warn(`ban-cap-redis: skipped: ${redisSkipReason}`);

const POLICY = { repeatGrowth: 2, repeatHalfLifeHours: 24, timeScale: 1, maxSources: 10_000, maxBans: 100 };
const v6 = (i: number) => `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`;

describe.skipIf(!haveRedis)('filter.maxBans on a node with Redis', () => {
  let redis: RedisServer;
  const buses: RedisBus[] = [];
  beforeAll(async () => { redis = await startRedis(); });
  afterAll(async () => { await Promise.all(buses.map((b) => b.close())); await redis?.close(); });

  const node = (id: string, maxBans: number) => {
    const bus = new RedisBus({ url: redis.url, prefix: 'cap:', nodeId: id });
    buses.push(bus);
    const got: Decision[] = [];
    bus.subscribe((d) => got.push(d));
    const d = new Decisions({ ...POLICY, maxBans }, [], { store: new SqliteFilterStore(openStore(tempDir())), log: createLogger('silent'), bus }, Date.now());
    return { bus, d, got };
  };

  it('what the node remembers of the cluster\'s bans stays within its cap; an unban of a ban lifted early here reaches a node that holds it', async () => {
    // Each node its own cap: B has room for everything.
    const a = node('A', 100), b = node('B', 10_000);
    await expect.poll(() => a.bus.healthy && b.bus.healthy, { timeout: 5000 }).toBe(true);
    const now = Date.now();
    a.d.ban('192.0.2.9', 'flood', 'x', 3600, now);
    for (let i = 0; i < 1000; i++) a.d.ban(v6(i), 'flood', 'x', 300 + (i % 50), now + i);
    expect(a.d.size).toBeLessThanOrEqual(100);
    expect(a.d.has('192.0.2.9')).toBe(true);
    const known = (a.bus as unknown as { known: { bans: Map<string, unknown> } }).known.bans;
    expect(known.size).toBeLessThanOrEqual(100);
    await expect.poll(() => b.d.size, { timeout: 10_000 }).toBe(1001);
    // The operator lifts, on A, a source A's cap had already lifted: not banned here, but lifted on B too.
    const liftedAtA = v6(0);
    expect(a.d.has(liftedAtA)).toBe(false);
    expect(b.d.has(liftedAtA)).toBe(true);
    expect(a.d.unban(liftedAtA, Date.now())).toBe(false);
    await expect.poll(() => b.d.has(liftedAtA), { timeout: 5000 }).toBe(false);
  });
});
