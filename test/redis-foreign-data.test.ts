// The Redis-shared decisions (SPEC §9; README "Several nodes on one Redis"): what a node does with entries it finds in
// Redis that it did not write itself (another version, an operator's hand-written key). Each part of Redis is read
// with a check of its shape; until 2026-11-29 some fields went unchecked into code that needs them (each case below
// failed on that code):
//   1. an attack state whose `reason` is not a string: a node that starts (or restarts) against that Redis throws in
//      its join and never starts; every node of the cluster is down after its next restart.
//   2. a whitelist entry without `note`: the node takes it into its store queue, where it cannot be bound to SQLite;
//      from then on every save of the filter state fails (bans, unbans, offences), and an operator's ban through the
//      admin API answers 500 and is not kept across a restart.
//   3. a ban without end (no expiresAt: the form redis-keys.ts reads as such): in force, but GET /api/blacklist (and
//      /api/blacklist/<ip>) answer 500 "Invalid time value" for as long as it is held: the operator lists no ban.
// Real redis-server and real in-process proxies on loopback, clients on 127.0.0.0/8 only; every wait is bounded.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Redis } from 'ioredis';
import { startOrigin, startProxy, rawExchange, request, until, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { findRedisServer, startRedis, type RedisServer } from './helpers/redis.ts';

const HOST = 'site.test';

describe.skipIf(findRedisServer() === null)('data in Redis written by someone else', () => {
  let redis: RedisServer;
  let origin: Origin;
  const proxies: Proxy[] = [];
  let raw: Redis;

  beforeAll(async () => {
    redis = await startRedis();
    origin = await startOrigin();
    raw = new Redis(redis.url);
  });
  afterEach(async () => {
    for (const p of proxies.splice(0)) await p.close().catch(() => {});
    await raw.flushall();
  });
  afterAll(async () => {
    raw?.disconnect();
    await redis?.close();
    await origin?.close();
  });

  const cfg = (extra: Record<string, unknown> = {}) => ({
    filter: { mode: 'auto' }, shutdown: { drainTimeoutMs: 200 },
    state: { redis: { url: redis.url } }, domains: [domain(HOST, [origin.address])], ...extra,
  });
  const get = (p: Proxy, local: string) => rawExchange(p.port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, { localAddress: local, timeoutMs: 2000 });

  it('a node starts against a Redis holding an attack state whose reason is not a string', async () => {
    const now = Date.now();
    // What a later version (a structured reason) or an operator forcing attack mode by hand might write.
    await raw.hset('scrubber:attack', HOST, JSON.stringify({ under: true, since: now, reason: { rule: 'rps', value: 5000 }, at: now }));
    let error: unknown = null;
    try { proxies.push(await startProxy(cfg())); } catch (e) { error = e; }
    expect(String(error ?? 'started')).toBe('started');
    expect((await get(proxies[0], '127.0.80.1')).text).toMatch(/^HTTP\/1\.1 200/);
  }, 20_000);

  it('a whitelist entry without a note, taken from Redis, does not stop the node saving its bans', async () => {
    // An entry as an operator might write it by hand (or another version without the field).
    await raw.hset('scrubber:whitelist', '127.0.81.9', JSON.stringify({ ip: '127.0.81.9', since: Date.now() }));
    const p = await startProxy(cfg());
    proxies.push(p);
    expect(p.app.filter.isWhitelistedSource('127.0.81.9')).toBe(true); // taken up at the join
    const r = await request(`${p.adminUrl}/api/blacklist/127.0.81.1`, { method: 'PUT', body: JSON.stringify({ ttlSeconds: 600, reason: 'review' }), headers: { 'content-type': 'application/json' } });
    // The filter saves every second: the ban is in the node's store within a few (what a restart with Redis away reads).
    const db = new DatabaseSync(path.join(p.stateDir, 'scrubber.db'), { readOnly: true });
    let stored = false;
    try {
      stored = await until(() => db.prepare('SELECT ip FROM filter_bans WHERE ip = ?').get('127.0.81.1') !== undefined, 3000);
    } finally { db.close(); }
    expect({ admin: r.status, stored }, `PUT /api/blacklist answered ${r.status} ${r.body}`).toEqual({ admin: 200, stored: true });
  }, 20_000);

  it('a ban without end found in Redis does not break the blacklist listing of the admin API', async () => {
    // The form redis-keys.ts reads as "a ban without end" (JSON has no Infinity: no expiresAt), scored +inf.
    await raw.hset('scrubber:bans', '127.0.82.1', JSON.stringify({ ip: '127.0.82.1', reason: 'hand-written', rule: 'manual', since: Date.now() }));
    await raw.zadd('scrubber:bans:exp', '+inf', '127.0.82.1');
    const p = await startProxy(cfg());
    proxies.push(p);
    expect(p.app.filter.decisions.has('127.0.82.1')).toBe(true); // in force: the node took it
    const list = await request(`${p.adminUrl}/api/blacklist`);
    const one = await request(`${p.adminUrl}/api/blacklist/127.0.82.1`);
    expect([list.status, one.status], `GET /api/blacklist answered ${list.status} ${list.body.slice(0, 120)}`).toEqual([200, 200]);
  }, 20_000);
});
