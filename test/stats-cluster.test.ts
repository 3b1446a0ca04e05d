// Cluster-wide statistics (SPEC.md §9): two real proxies on one real Redis.
// /api/stats and /api/billing with scope=cluster add up every node; with Redis
// stopped they answer 503 while each node's own figures still work, and what
// was counted meanwhile reaches the cluster when Redis is back. An outbox row
// pushed but not yet deleted (a crash between the two) is not counted twice.
// Emptied (FLUSHALL), every node writes its totals back, idle ones too; a node
// that ran alone before it joined Redis brings its stored history.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, request, domain, tempDir, sleep, type Origin, type Proxy } from './helpers/servers.ts';
import { findRedisServer, startRedis, type RedisServer } from './helpers/redis.ts';
import { relay } from './helpers/relay.ts';
import { Redis } from 'ioredis';
import { openStore } from '../src/store/db.ts';
import { StatsStore } from '../src/stats/store.ts';
import { RedisClusterStats } from '../src/store/redis-stats.ts';
import { newCounters, newGlobal, F, bucketOf } from '../src/stats/buckets.ts';

const hasRedis = findRedisServer() !== null;
const HOST = 'c.test';
const sum = (buckets: any[], f: (b: any) => number) => buckets.reduce((a, b) => a + f(b), 0);
const quiet = { warn() {}, info() {} };
/** Bounded wait for an asynchronous condition. */
async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await cond()) return true; await sleep(50); }
  return cond();
}

describe.skipIf(!hasRedis)('statistics across nodes on one Redis', () => {
  let redis: RedisServer;
  let origin: Origin;
  let a: Proxy, b: Proxy;

  beforeAll(async () => {
    redis = await startRedis();
    origin = await startOrigin();
    const cfg = () => ({ state: { dir: tempDir(), redis: { url: redis.url } }, stats: { flushIntervalMs: 200 }, domains: [domain(HOST, [origin.address])] });
    a = await startProxy(cfg());
    b = await startProxy(cfg());
  }, 30_000);

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await redis?.close();
    await origin?.close();
  });

  const send = async (p: Proxy, n: number) => {
    for (let i = 0; i < n; i++) expect((await request(`${p.url}/x`, { headers: { host: HOST } })).status).toBe(200);
  };
  const passed = async (p: Proxy, scope: string) => {
    const r = await request(`${p.adminUrl}/api/stats?domain=${HOST}&scope=${scope}`);
    return { status: r.status, n: r.status === 200 ? sum(JSON.parse(r.body).buckets, (x) => x.passed.requests) : -1, body: r.body };
  };

  it('scope=cluster adds up both nodes; scope=node (the default) stays each node\'s own', async () => {
    await send(a, 3);
    await send(b, 2);
    // Each node pushes on its own flush timer: both within a few hundred ms.
    expect(await until(async () => (await passed(a, 'cluster')).n === 5, 5000)).toBe(true);
    expect((await passed(b, 'cluster')).n).toBe(5);
    expect((await passed(a, 'node')).n).toBe(3);
    expect(sum(JSON.parse((await request(`${b.adminUrl}/api/stats?domain=${HOST}`)).body).buckets, (x) => x.passed.requests)).toBe(2);
    const bill = JSON.parse((await request(`${a.adminUrl}/api/billing?domain=${HOST}&scope=cluster`)).body);
    expect(bill.scope).toBe('cluster');
    expect(bill.samplesWithTraffic).toBeGreaterThan(0);
    const own = JSON.parse((await request(`${a.adminUrl}/api/billing?domain=${HOST}`)).body);
    expect(sum(bill.samples, (s: any) => s.bytesOut)).toBeGreaterThan(sum(own.samples, (s: any) => s.bytesOut));
  });

  it('a bad scope is a 400 naming it', async () => {
    const r = await request(`${a.adminUrl}/api/stats?domain=${HOST}&scope=everything`);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toMatch(/scope/);
  });

  it('with Redis down: 503 for the cluster, the node\'s own still served; what was counted meanwhile arrives when Redis returns', async () => {
    await redis.stop();
    await send(a, 4);
    await send(b, 1);
    const down = await passed(a, 'cluster');
    expect(down.status).toBe(503);
    expect(JSON.parse(down.body).error).toMatch(/Redis/);
    expect((await passed(a, 'node')).n).toBe(7);
    // The test's Redis keeps nothing across a restart: each node finds the epoch changed and pushes its whole totals
    // again, so the cluster holds all ten requests, not only the five counted while Redis was away.
    await redis.restart();
    expect(await until(async () => (await passed(a, 'cluster')).n === 10, 8000)).toBe(true);
    expect((await passed(b, 'cluster')).n).toBe(10);
    // And no more after the next flushes (the totals are pushed once, the outbox rows they include are not).
    await sleep(600);
    expect((await passed(a, 'cluster')).n).toBe(10);
  }, 20_000);

  it('Redis emptied while the nodes run (FLUSHALL): the cluster totals are rebuilt, nothing counted twice', async () => {
    const raw = new Redis(redis.url);
    try { await raw.flushall(); } finally { raw.disconnect(); }
    await send(a, 1);
    expect(await until(async () => (await passed(b, 'cluster')).n === 11, 8000)).toBe(true);
    await sleep(600);
    expect((await passed(a, 'cluster')).n).toBe(11);
  }, 20_000);

  it('emptied again with both nodes idle (a standby, a drained node): each writes its totals back all the same', async () => {
    // Until 2026-11-29 only a flush with something new looked at the epoch: a node that counted nothing since stayed
    // out of the cluster's totals (README "if it restarts empty (or is emptied with FLUSHALL while the nodes run: the
    // epoch is looked at with every heartbeat)").
    const raw = new Redis(redis.url);
    try { await raw.flushall(); } finally { raw.disconnect(); }
    const back = await until(async () => (await passed(b, 'cluster')).n === 11, 8000);
    expect({ back, clusterSeenFromB: (await passed(b, 'cluster')).n }).toEqual({ back: true, clusterSeenFromB: 11 });
  }, 20_000);
});

// A node that ran alone (no state.redis.url) and is then put on Redis: until 2026-11-29 its first push recorded
// Redis's epoch without queuing what its store already held, so its history was missing from scope=cluster until
// Redis happened to lose its data. Checked: with one node only, the cluster's figure equals the node's own.
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

describe.skipIf(!hasRedis)('scope=cluster on a node of one process, at the default flush interval', () => {
  let redis: RedisServer; let origin: Origin; let a: Proxy;
  afterAll(async () => { await a?.close(); await redis?.close(); await origin?.close(); });

  // The totals are pushed every stats.flushIntervalMs (5 s); scope=node and both bills flushed first, scope=cluster
  // did not, so right after traffic the cluster's figure was below this node's own.
  it('includes this node\'s latest requests, as scope=node does', async () => {
    redis = await startRedis(); origin = await startOrigin();
    a = await startProxy({ state: { dir: tempDir(), redis: { url: redis.url } }, domains: [domain(HOST, [origin.address])] });
    const passed = async (scope: string) => sum(JSON.parse((await request(`${a.adminUrl}/api/stats?domain=${HOST}&scope=${scope}`)).body).buckets, (x) => x.passed.requests);
    for (let i = 0; i < 3; i++) expect((await request(`${a.url}/x`, { headers: { host: HOST } })).status).toBe(200);
    const node = await passed('node');
    for (let i = 0; i < 2; i++) expect((await request(`${a.url}/x`, { headers: { host: HOST } })).status).toBe(200);
    const cluster = await passed('cluster');
    expect({ node, cluster, node2: await passed('node') }).toEqual({ node: 3, cluster: 5, node2: 5 });
  }, 20_000);
});

describe.skipIf(!hasRedis)('the statistics outbox', () => {
  it('applies a row once even when it is pushed again (a crash between the push and the delete)', async () => {
    const redis = await startRedis();
    const db = openStore(tempDir());
    try {
      const store = new StatsStore(db);
      store.outbox = true;
      const t = bucketOf(Date.now());
      const c = newCounters();
      c[F.reqIn] = 10;
      c[F.reqPassed] = 10;
      store.write([{ domain: HOST, t, c }], []);
      const row = store.outboxRows(10)[0];
      const cluster = new RedisClusterStats({ url: redis.url, store, nodeId: 'node-1', retentionDays: () => 1, log: quiet });
      await until(async () => { await cluster.push(); return store.outboxSize === 0; }, 5000);
      // As if the process died after Redis applied the row and before the outbox forgot it.
      db.prepare('INSERT INTO stats_outbox (seq, body) VALUES (?, ?)').run(row.seq, row.body);
      await cluster.push();
      expect(store.outboxSize).toBe(0);
      const buckets = await cluster.buckets(HOST, t, t + 180);
      expect(sum(buckets, (x) => x.incoming.requests)).toBe(10);
      // A new row (the next seq) is added.
      store.write([{ domain: HOST, t, c }], []);
      const after = await cluster.buckets(HOST, t, t + 180);
      expect(sum(after, (x) => x.incoming.requests)).toBe(20);
      await cluster.close();
    } finally {
      db.close();
      await redis.close();
    }
  });

  it('pushing the whole totals again (Redis lost them) goes in steps: every bucket once, the old outbox replaced', async () => {
    const db = openStore(tempDir());
    try {
      const store = new StatsStore(db);
      store.outbox = true;
      const t0 = bucketOf(Date.now()) - 1200 * 180;
      const c = newCounters();
      c[F.reqPassed] = 2;
      // 1200 buckets of one domain, in 12 writes (12 outbox rows, as if never pushed), and one global bucket.
      for (let w = 0; w < 12; w++) store.write(Array.from({ length: 100 }, (_, i) => ({ domain: HOST, t: t0 + (w * 100 + i) * 180, c })), []);
      const g = newGlobal();
      g[0] = 3;
      store.write([], [{ t: t0, g }]);
      expect(store.outboxSize).toBe(13);
      let pauses = 0;
      const rows = await store.rebuildOutbox('epoch-2', async () => { pauses++; });
      expect(rows).toBe(4); // 500 + 500 + 200 domain buckets, then the global one
      expect(pauses).toBeGreaterThanOrEqual(3); // a turn of the event loop after each step
      expect(store.clusterEpoch()).toBe('epoch-2');
      const bodies = store.outboxRows(100).map((r) => JSON.parse(r.body) as { d: { t: number; c: Record<string, number> }[] });
      const ts = bodies.flatMap((b) => b.d.map((d) => d.t));
      expect(new Set(ts).size).toBe(1200);
      expect(bodies.flatMap((b) => b.d).reduce((n, d) => n + (d.c.req_passed ?? 0), 0)).toBe(2400);
    } finally {
      db.close();
    }
  });

  it('statistics written while the totals are read again count once; a rebuild cut short is done again from scratch', async () => {
    const db = openStore(tempDir());
    try {
      const store = new StatsStore(db);
      store.outbox = true;
      store.setClusterEpoch('epoch-1');
      const t0 = bucketOf(Date.now()) - 1200 * 180;
      const c = newCounters();
      c[F.reqPassed] = 2;
      for (let w = 0; w < 12; w++) store.write(Array.from({ length: 100 }, (_, i) => ({ domain: HOST, t: t0 + (w * 100 + i) * 180, c })), []);
      // Between steps the proxy goes on counting: into a bucket already read and into one not read yet.
      const delta = newCounters();
      delta[F.reqPassed] = 5;
      let writes = 0;
      const g = newGlobal();
      g[1] = 1; // a summed global column (accept_dropped)
      store.write([], [{ t: t0, g }]);
      // A domain first seen during the rebuild too: it is read by no step, so its deltas are queued as usual.
      const meanwhile = () => { writes++; store.write([{ domain: HOST, t: t0, c: delta }, { domain: HOST, t: t0 + 1199 * 180, c: delta }, { domain: 'new.test', t: t0, c: delta }], [{ t: t0, g }]); };
      let calls = 0;
      await expect(store.rebuildOutbox('epoch-2', async () => { meanwhile(); if (++calls === 2) throw new Error('killed'); })).rejects.toThrow('killed');
      expect(store.clusterEpoch()).toBe('epoch-1'); // not done: the next push rebuilds again
      await store.rebuildOutbox('epoch-2', async () => { meanwhile(); });
      expect(store.clusterEpoch()).toBe('epoch-2');
      const bodies = store.outboxRows(1000).map((r) => JSON.parse(r.body) as { d: { c: Record<string, number> }[]; g: { c: Record<string, number> }[] });
      const sum = bodies.flatMap((b) => b.d).reduce((n, d) => n + (d.c.req_passed ?? 0), 0);
      expect(bodies.flatMap((b) => b.g).reduce((n, x) => n + (x.c.accept_dropped ?? 0), 0)).toBe(1 + writes);
      // 1200 buckets × 2, plus 2 × 5 for each pause of both attempts: what the store holds.
      const stored = (db.prepare('SELECT sum(req_passed) AS n FROM stats_domain_bucket').get() as { n: number }).n;
      expect(writes).toBeGreaterThanOrEqual(5);
      expect(stored).toBe(2400 + 15 * writes);
      expect(sum).toBe(stored);
    } finally {
      db.close();
    }
  });
});


describe.skipIf(!hasRedis)('the statistics connection', () => {
  // As test/decisions-redis.test.ts does for the decision connection: a relay that freezes (connections stay open,
  // nothing passes). Before 2026-12 the statistics connection had no heartbeat: it stayed "ready" for minutes, each
  // push and each scope=cluster query waited out ioredis's 10 s command timeout (a query: ~20 s to its 503), and
  // close() could wait ~10 s past the drain time.
  it('a link that dies silently (no reset) is noticed by the heartbeat; queries fail fast, close() is bounded', async () => {
    const redis = await startRedis();
    const link = await relay(redis.port);
    const db = openStore(tempDir());
    let cluster: RedisClusterStats | null = null;
    try {
      const store = new StatsStore(db);
      store.outbox = true;
      const t = bucketOf(Date.now());
      const c = newCounters();
      c[F.reqIn] = 5;
      const mk = () => new RedisClusterStats({ url: link.url, store, nodeId: 'node-hb', retentionDays: () => 1, log: quiet, heartbeatMs: 300, heartbeatTimeoutMs: 1000, closeTimeoutMs: 1000 });
      cluster = mk();
      const answers = async () => { try { await cluster!.buckets(HOST, t, t + 180); return true; } catch { return false; } };
      expect(await until(answers, 5000)).toBe(true);
      link.freeze();
      // Noticed within the heartbeat's timeout (and a period): from then on a query fails at once (the API's 503).
      await sleep(2000);
      const got = await Promise.race([cluster.buckets(HOST, t, t + 180).then(() => 'answered', (e) => String(e)), sleep(500).then(() => 'no answer within 500 ms')]);
      expect(got).toMatch(/unreachable/);
      // Back: what was counted meanwhile is pushed.
      store.write([{ domain: HOST, t, c }], []);
      link.thaw();
      expect(await until(async () => { await cluster!.push(); return store.outboxSize === 0; }, 5000)).toBe(true);
      expect(sum(await cluster.buckets(HOST, t, t + 180), (x) => x.incoming.requests)).toBe(5);
      // Frozen again, at once closed with a row to push: close() waits no longer than its bound.
      link.freeze();
      store.write([{ domain: HOST, t, c }], []);
      const t1 = Date.now();
      await cluster.close();
      cluster = null;
      expect(Date.now() - t1).toBeLessThan(2000);
      expect(store.outboxSize).toBe(1); // kept for the next start
    } finally {
      await cluster?.close();
      await link.close();
      db.close();
      await redis.close();
    }
  }, 30_000);
});
