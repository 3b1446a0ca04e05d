// The cluster statistics (SPEC.md §7, §9; README "Several nodes on one Redis": "if it restarts empty (or is
// emptied with FLUSHALL while the nodes run: the epoch is looked at with every heartbeat), the nodes notice ... and
// write back ... each node's whole statistics"). Checked here: a node that counted traffic and then stays idle (a
// standby, a drained node) must still write its totals back after a FLUSHALL, so that the cluster's bill and buckets
// queried on ANOTHER node come back whole; and a node that ran alone before it joined Redis counts its stored
// history in the cluster's totals. Both failed on the code before 2026-11-29. Two real proxies on one real Redis (loopback only), bounded waits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, request, domain, tempDir, sleep, type Origin, type Proxy } from './helpers/servers.ts';
import { findRedisServer, startRedis, type RedisServer } from './helpers/redis.ts';
import { Redis } from 'ioredis';

const hasRedis = findRedisServer() !== null;
const HOST = 'rv.test';
const sum = (buckets: any[], f: (b: any) => number) => buckets.reduce((a, b) => a + f(b), 0);
async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await cond()) return true; await sleep(100); }
  return cond();
}

describe.skipIf(!hasRedis)('cluster statistics after Redis is emptied', () => {
  let redis: RedisServer; let origin: Origin; let a: Proxy; let b: Proxy;
  beforeAll(async () => {
    redis = await startRedis();
    origin = await startOrigin();
    const cfg = () => ({ state: { dir: tempDir(), redis: { url: redis.url } }, stats: { flushIntervalMs: 200 }, domains: [domain(HOST, [origin.address])] });
    a = await startProxy(cfg());
    b = await startProxy(cfg());
  }, 30_000);
  afterAll(async () => { await a?.close(); await b?.close(); await redis?.close(); await origin?.close(); });

  const passed = async (p: Proxy) => {
    const r = await request(`${p.adminUrl}/api/stats?domain=${HOST}&scope=cluster`);
    return r.status === 200 ? sum(JSON.parse(r.body).buckets, (x) => x.passed.requests) : -1;
  };

  it('an idle node writes its totals back after FLUSHALL: the cluster seen from another node comes back whole', async () => {
    for (let i = 0; i < 4; i++) expect((await request(`${a.url}/x`, { headers: { host: HOST } })).status).toBe(200);
    expect(await until(async () => (await passed(b)) === 4, 5000)).toBe(true);
    const raw = new Redis(redis.url);
    try { await raw.flushall(); } finally { raw.disconnect(); }
    // Node a gets no more traffic. Many heartbeats and flushes later, b's view of the cluster must hold a's 4 again.
    const back = await until(async () => (await passed(b)) === 4, 8000);
    expect({ back, clusterPassedSeenFromB: await passed(b) }).toEqual({ back: true, clusterPassedSeenFromB: 4 });
  }, 30_000);
});

// A node that ran alone (no state.redis.url) and is then put on Redis: its first push records Redis's epoch without
// queuing what its store already holds, so its history is missing from scope=cluster, until Redis happens to lose its
// data, when the rebuild pushes everything: the same month's cluster bill changes with a Redis restart. Checked: with
// one node only, the cluster's figure for the day equals the node's own.
describe.skipIf(!hasRedis)('a node joining Redis with statistics already stored', () => {
  let redis: RedisServer; let origin: Origin; let p: Proxy | undefined;
  afterAll(async () => { await p?.close(); await redis?.close(); await origin?.close(); });

  it('scope=cluster holds the node\'s whole stored statistics, as a rebuild would', async () => {
    redis = await startRedis(); origin = await startOrigin();
    const dir = tempDir();
    p = await startProxy({ state: { dir }, stats: { flushIntervalMs: 200 }, domains: [domain(HOST, [origin.address])] });
    for (let i = 0; i < 3; i++) expect((await request(`${p.url}/x`, { headers: { host: HOST } })).status).toBe(200);
    await p.close(); p = undefined;
    p = await startProxy({ state: { dir, redis: { url: redis.url } }, stats: { flushIntervalMs: 200 }, domains: [domain(HOST, [origin.address])] });
    expect((await request(`${p.url}/x`, { headers: { host: HOST } })).status).toBe(200);
    const q = async (scope: string) => sum(JSON.parse((await request(`${p!.adminUrl}/api/stats?domain=${HOST}&scope=${scope}`)).body).buckets, (x) => x.passed.requests);
    expect({ node: await q('node'), cluster: await q('cluster') }).toEqual({ node: 4, cluster: 4 });
  }, 30_000);
});
