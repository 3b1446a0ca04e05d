// Liftings across nodes on one Redis, with two real `scrubber` processes and a
// real redis-server on loopback (stopped, restarted empty, by PID through
// test/helpers/redis.ts). A lifting must hold on every node and in Redis
// whatever crossed it: a ban and a whitelist entry made on two nodes while
// Redis was away (the whitelist stands: "whitelisted sources are never
// blocked"), and an unban or a whitelist removal made while another node was
// stopped, when Redis then restarts empty before that node returns (it writes
// back its own stale store). Both failed on the code before 2026-11-29: a
// whitelist entry heard from another node lifted the bans here and not in
// Redis, so a node started later took the ban up again; and a node writing
// back into an empty Redis wrote what was in force but not what it had lifted,
// so the returning node's write-back brought the lifted ban and range back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, sleep, type Origin } from './helpers/servers.ts';
import { findRedisServer, redisSkipReason, startRedis, type RedisServer } from './helpers/redis.ts';
import { nodeApi, nodeFiles, refusedAt, startNode, stopNode, type RedisNode } from './helpers/redis-nodes.ts';
import { Known } from '../src/store/redis-resync.ts';
import { Redis } from 'ioredis';

const HOST = 'site.test';
const hasRedis = findRedisServer() !== null;

type Node = RedisNode;
const api = nodeApi;
const refused = (n: Node, local: string) => refusedAt(n, local, HOST);
const listed = async (n: Node, ip: string) => JSON.parse((await api(n, 'GET', `/api/blacklist/${ip}`)).body).listed === true;
const health = async (n: Node) => JSON.parse((await api(n, 'GET', '/healthz')).body).status as string;
const whitelisted = async (n: Node, entry: string) =>
  (JSON.parse((await api(n, 'GET', '/api/whitelist')).body) as { entries: { ip: string }[] }).entries.some((e) => e.ip === entry);
async function within(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) { if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`); await sleep(50); }
}

describe.skipIf(!hasRedis)('two nodes on one Redis: liftings', () => {
  let redis: RedisServer;
  let origin: Origin;
  let a: Node, b: Node;

  beforeAll(async () => {
    redis = await startRedis();
    origin = await startOrigin();
    const make = (name: string) => nodeFiles(name, redis.url, origin.address, HOST, { workers: 1 });
    a = await startNode(await make('a'));
    b = await startNode(await make('b'));
  }, 30_000);

  afterAll(async () => {
    for (const n of [a, b]) if (n) n.child.kill('SIGKILL');
    await redis?.close();
    await origin?.close();
  });

  // During an outage node B bans X and node A whitelists X (in both orders, two addresses). Once Redis is back and
  // the entry removed again, no node bans X, and Redis holds no ban of X: a node restarted on its own store agrees.
  it('a ban and a whitelist entry on the same address made on two nodes during an outage: the whitelist lifts the ban in Redis too', async () => {
    const later = '127.0.81.1', earlier = '127.0.81.2';
    await redis.stop();
    await within(async () => (await health(a)) === 'degraded' && (await health(b)) === 'degraded', 6000, 'degraded');
    // Either order: whitelist then ban, ban then whitelist.
    expect((await api(a, 'PUT', `/api/whitelist/${later}`, { note: 'partner' })).status).toBe(200);
    await sleep(20);
    expect((await api(b, 'PUT', `/api/blacklist/${later}`, { ttlSeconds: 3600, reason: 'b, while down' })).status).toBe(200);
    expect((await api(b, 'PUT', `/api/blacklist/${earlier}`, { ttlSeconds: 3600, reason: 'b, while down' })).status).toBe(200);
    await sleep(20);
    expect((await api(a, 'PUT', `/api/whitelist/${earlier}`, { note: 'partner' })).status).toBe(200);
    await redis.restart();
    await within(async () => (await health(a)) === 'ok' && (await health(b)) === 'ok', 10_000, 'ok again');
    for (const ip of [later, earlier]) await within(async () => (await whitelisted(b, ip)) && !(await listed(b, ip)), 5000, `${ip} whitelisted on b`);
    await sleep(1000);
    for (const n of [a, b]) for (const ip of [later, earlier]) expect(await listed(n, ip)).toBe(false);
    // The entries are removed: no node holds a ban on either address...
    for (const ip of [later, earlier]) expect((await api(a, 'DELETE', `/api/whitelist/${ip}`)).status).toBe(200);
    for (const ip of [later, earlier]) await within(async () => !(await whitelisted(b, ip)), 3000, `${ip} unwhitelisted on b`);
    for (const n of [a, b]) for (const ip of [later, earlier]) expect(await listed(n, ip)).toBe(false);
    // ...and Redis (what a node that starts later takes as the cluster) must not hold one either.
    const raw = new Redis(redis.url);
    let inRedis: (string | null)[];
    try { inRedis = await Promise.all([later, earlier].map((ip) => raw.hget('scrubber:bans', ip))); } finally { raw.disconnect(); }
    // Black-box consequence: node B restarted on its own store agrees with node A.
    await stopNode(b);
    b = await startNode({ port: b.port, admin: b.admin, dir: b.dir, file: b.file });
    const afterRestart = { [later]: await listed(b, later), [earlier]: await listed(b, earlier) };
    const droppedAtAccept = await refused(b, later);
    expect({ afterRestart, droppedAtAccept, inRedis }).toEqual({ afterRestart: { [later]: false, [earlier]: false }, droppedAtAccept: false, inRedis: [null, null] });
  }, 60_000);

  // Node B is stopped (a deploy); on A an operator lifts a ban and removes a whitelist range; Redis restarts empty.
  // A writes back what is in force and what it lifted; B, back, writes back its stale store, which Redis refuses as
  // older: neither comes back, on B, on A or in Redis.
  it('an unban and a whitelist removal made while a node was down survive a Redis restart (empty) before that node returns', async () => {
    const ip = '127.0.82.1', range = '127.0.83.0/24';
    expect((await api(a, 'PUT', `/api/blacklist/${ip}`, { ttlSeconds: 3600, reason: 'to be lifted' })).status).toBe(200);
    expect((await api(a, 'PUT', `/api/whitelist/${encodeURIComponent(range)}`, { note: 'to be removed' })).status).toBe(200);
    await within(async () => (await listed(b, ip)) && (await whitelisted(b, range)), 3000, 'b has both');
    await stopNode(b);
    expect((await api(a, 'DELETE', `/api/blacklist/${ip}`)).status).toBe(200);
    expect((await api(a, 'DELETE', `/api/whitelist/${encodeURIComponent(range)}`)).status).toBe(200);
    await sleep(300);
    await redis.restart(); // empty: no persistence
    await within(async () => (await health(a)) === 'ok', 10_000, 'a ok again');
    await sleep(1500); // a's write-back
    b = await startNode({ port: b.port, admin: b.admin, dir: b.dir, file: b.file });
    await within(async () => (await health(b)) === 'ok', 10_000, 'b ok');
    await sleep(1500); // b's write-back
    const raw = new Redis(redis.url);
    let inRedis: { ban: boolean; whitelist: boolean };
    try { inRedis = { ban: (await raw.hget('scrubber:bans', ip)) !== null, whitelist: (await raw.hget('scrubber:whitelist', range)) !== null }; } finally { raw.disconnect(); }
    const view = async (n: Node) => ({ banned: await listed(n, ip), whitelisted: await whitelisted(n, range) });
    expect({ a: await view(a), b: await view(b), droppedOnB: await refused(b, ip), inRedis }).toEqual({
      a: { banned: false, whitelisted: false }, b: { banned: false, whitelisted: false }, droppedOnB: false, inRedis: { ban: false, whitelist: false },
    });
  }, 60_000);
});

if (!hasRedis) describe('two nodes on one Redis: liftings', () => { it.skip(redisSkipReason, () => {}); });

describe('what a node remembers of liftings (Known, pure)', () => {
  const ban = (ip: string, since: number) => ({ kind: 'ban' as const, entry: { ip, reason: 'r', rule: 'manual', since, expiresAt: since + 3600_000 } });
  it('keeps a lifting past an older decision of the same address, forgets it at a newer one, and only for a week', () => {
    const k = new Known();
    k.remember({ kind: 'unban', ip: '127.0.84.1', at: 1000 });
    k.remember({ kind: 'unwhitelist', ip: '127.0.84.0/24', at: 1000 });
    k.remember(ban('127.0.84.1', 900)); // a stale write-back: the lifting still stands
    expect(k.liftings(2000).map((d) => d.kind).sort()).toEqual(['unban', 'unwhitelist']);
    k.remember(ban('127.0.84.1', 1500)); // decided since: the ban stands now
    expect(k.liftings(2000)).toEqual([{ kind: 'unwhitelist', ip: '127.0.84.0/24', at: 1000 }]);
    k.remember({ kind: 'unban', ip: '127.0.84.2' }); // a catch-up's unban says no time: nothing to write back
    expect(k.liftings(1000 + 8 * 24 * 3600_000)).toEqual([]);
  });
});
