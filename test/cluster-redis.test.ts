// Many nodes on one Redis (SPEC §9), black-box: two real `scrubber` processes
// share a real redis-server. A ban made on one node drops the source at accept
// on the other within a second; a node restarted rejoins with every live ban;
// with Redis stopped both keep serving and say "degraded" in /healthz, and
// what was decided meanwhile reaches the other node once Redis is back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startOrigin, rawExchange, sleep, type Origin } from './helpers/servers.ts';
import { findRedisServer, redisSkipReason, startRedis, type RedisServer } from './helpers/redis.ts';
import { nodeApi, nodeFiles, refusedAt, startNode, stopNode, type RedisNode } from './helpers/redis-nodes.ts';
import { Redis } from 'ioredis';

const HOST = 'site.test';
const hasRedis = findRedisServer() !== null;

type Node = RedisNode;
const api = nodeApi;
const refused = (n: Node, local: string) => refusedAt(n, local, HOST);

describe.skipIf(!hasRedis)('two nodes on one Redis', () => {
  let redis: RedisServer;
  let origin: Origin;
  let a: Node, b: Node;

  beforeAll(async () => {
    redis = await startRedis();
    origin = await startOrigin();
    const make = (name: string) => nodeFiles(name, redis.url, origin.address, HOST, {});
    a = await startNode(await make('a'));
    b = await startNode(await make('b'));
  }, 30_000);

  afterAll(async () => {
    for (const n of [a, b]) if (n) n.child.kill('SIGKILL');
    await redis?.close();
    await origin?.close();
  });

  it('a ban made on one node drops the source at accept on the other within a second', async () => {
    expect((await rawExchange(b.port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { localAddress: '127.0.61.1' })).text).toMatch(/^HTTP\/1\.1 200/);
    const t0 = Date.now();
    expect((await api(a, 'PUT', '/api/blacklist/127.0.61.1', { ttlSeconds: 600, reason: 'test' })).status).toBe(200);
    let dropped = false;
    while (!dropped && Date.now() - t0 < 1000) dropped = await refused(b, '127.0.61.1');
    expect(dropped).toBe(true);
    const listed = JSON.parse((await api(b, 'GET', '/api/blacklist/127.0.61.1')).body);
    expect(listed).toMatchObject({ listed: true, reason: 'test' });
  });

  it('a node restarted rejoins with every live ban', async () => {
    await api(a, 'PUT', '/api/blacklist/127.0.61.2', { ttlSeconds: 600, reason: 'second' });
    await stopNode(b);
    // Wiped local state: everything it knows after the restart comes from Redis.
    fs.rmSync(path.join(b.dir, 'data'), { recursive: true, force: true });
    b = await startNode({ port: b.port, admin: b.admin, dir: b.dir, file: b.file });
    const list = JSON.parse((await api(b, 'GET', '/api/blacklist')).body) as { entries: { ip: string }[] };
    expect(list.entries.map((e) => e.ip).sort()).toEqual(['127.0.61.1', '127.0.61.2']);
    expect(await refused(b, '127.0.61.2')).toBe(true);
  }, 20_000);

  it('with Redis down both nodes keep serving and report degraded; a ban made meanwhile reaches the other node when Redis is back', async () => {
    await redis.stop();
    for (const n of [a, b]) {
      let h = { status: 'ok' };
      for (let i = 0; i < 40 && h.status === 'ok'; i++) { await sleep(100); h = JSON.parse((await api(n, 'GET', '/healthz')).body); }
      expect(h.status).toBe('degraded');
      expect((await rawExchange(n.port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { localAddress: '127.0.61.9' })).text).toMatch(/^HTTP\/1\.1 200/);
    }
    expect((await api(a, 'PUT', '/api/blacklist/127.0.61.3', { ttlSeconds: 600, reason: 'while down' })).status).toBe(200);
    expect(await refused(a, '127.0.61.3')).toBe(true);
    await redis.restart();
    let ok = false;
    for (let i = 0; i < 80 && !ok; i++) { await sleep(100); ok = JSON.parse((await api(b, 'GET', '/api/blacklist/127.0.61.3')).body).listed === true; }
    expect(ok).toBe(true);
    expect(await refused(b, '127.0.61.3')).toBe(true);
    // In step with Redis's clock (the same machine): /healthz as SPEC §10 has it, the offset in /metrics.
    expect(JSON.parse((await api(b, 'GET', '/healthz')).body)).toEqual({ status: 'ok' });
    const offset = () => api(b, 'GET', '/metrics').then((r) => /^scrubber_redis_clock_offset_ms (-?[\d.]+)$/m.exec(r.body)?.[1]);
    let v = await offset();
    for (let i = 0; i < 30 && v === undefined; i++) { await sleep(100); v = await offset(); }
    expect(Math.abs(Number(v))).toBeLessThan(1000);
  }, 30_000);

  const listed = async (n: Node, ip: string) => JSON.parse((await api(n, 'GET', `/api/blacklist/${ip}`)).body).listed === true;
  /** The node stopped and started again on its own config and store. */
  const again = async (n: Node) => { await stopNode(n); return startNode({ port: n.port, admin: n.admin, dir: n.dir, file: n.file }); };
  const wl = (n: Node, method: 'PUT' | 'DELETE', entry: string) => api(n, method, `/api/whitelist/${encodeURIComponent(entry)}`, method === 'PUT' ? { note: 'test' } : undefined);
  const within = async (cond: () => Promise<boolean>, ms: number) => {
    const end = Date.now() + ms;
    while (!(await cond())) { if (Date.now() > end) throw new Error(`not within ${ms} ms`); await sleep(25); }
  };
  const whitelisted = async (n: Node, entry: string) => (JSON.parse((await api(n, 'GET', '/api/whitelist')).body) as { entries: { ip: string }[] }).entries.some((e) => e.ip === entry);

  it('whitelisting lifts a ban everywhere, in Redis too: a node started later does not ban the source again', async () => {
    const ip = '127.0.61.20';
    expect((await api(a, 'PUT', `/api/blacklist/${ip}`, { ttlSeconds: 600, reason: 'to be lifted' })).status).toBe(200);
    await within(() => listed(b, ip), 3000);
    expect((await api(a, 'PUT', `/api/whitelist/${ip}`, { note: 'partner' })).status).toBe(200);
    await within(async () => !(await listed(b, ip)), 3000);
    expect((await api(a, 'DELETE', `/api/whitelist/${ip}`)).status).toBe(200);
    await within(async () => !(await whitelisted(b, ip)), 3000);
    // A node that starts from nothing but Redis: the lifted ban must not be there.
    await stopNode(b);
    fs.rmSync(path.join(b.dir, 'data'), { recursive: true, force: true });
    b = await startNode({ port: b.port, admin: b.admin, dir: b.dir, file: b.file });
    expect(await listed(b, ip)).toBe(false);
  }, 30_000);

  it("a whitelist entry removed on another node does not come back from a node's own store when it restarts", async () => {
    const entry = '127.0.62.0/24';
    expect((await wl(b, 'PUT', entry)).status).toBe(200);
    await within(() => whitelisted(a, entry), 3000);
    expect((await wl(a, 'DELETE', entry)).status).toBe(200);
    await within(async () => !(await whitelisted(b, entry)), 3000);
    b = await again(b); // its own store kept this time
    expect(await whitelisted(b, entry)).toBe(false);
  }, 30_000);

  it('a ban made while Redis is down reaches the other node even when its node was restarted before Redis came back', async () => {
    const ip = '127.0.61.30';
    await redis.stop();
    await within(async () => JSON.parse((await api(a, 'GET', '/healthz')).body).status === 'degraded', 5000);
    expect((await api(a, 'PUT', `/api/blacklist/${ip}`, { ttlSeconds: 600, reason: 'while down, then a restart' })).status).toBe(200);
    a = await again(a); // a deploy, say: its queue of decisions not yet written must survive it
    expect(await listed(a, ip)).toBe(true);
    await redis.restart();
    await within(() => listed(b, ip), 8000);
    expect(await refused(b, ip)).toBe(true);
  }, 40_000);

  it('a node that was down while an entry was lifted elsewhere lifts it too when it starts again', async () => {
    const entry = '127.0.63.0/24';
    expect((await wl(b, 'PUT', entry)).status).toBe(200);
    await within(() => whitelisted(a, entry), 3000);
    await stopNode(b);
    expect((await wl(a, 'DELETE', entry)).status).toBe(200);
    b = await startNode({ port: b.port, admin: b.admin, dir: b.dir, file: b.file });
    await within(async () => !(await whitelisted(b, entry)), 3000);
  }, 30_000);

  it('a ban changed on another node while a node was down (a new expiry and reason) is the one it holds when it starts again', async () => {
    const ip = '127.0.61.50';
    expect((await api(b, 'PUT', `/api/blacklist/${ip}`, { ttlSeconds: 7200, reason: 'old, two hours' })).status).toBe(200);
    await within(async () => JSON.parse((await api(a, 'GET', `/api/blacklist/${ip}`)).body).reason === 'old, two hours', 3000);
    await stopNode(b);
    await sleep(20);
    expect((await api(a, 'PUT', `/api/blacklist/${ip}`, { ttlSeconds: 60, reason: 'new, one minute' })).status).toBe(200);
    b = await startNode({ port: b.port, admin: b.admin, dir: b.dir, file: b.file });
    const view = async (n: Node) => { const e = JSON.parse((await api(n, 'GET', `/api/blacklist/${ip}`)).body); return { reason: e.reason, expiresAt: e.expiresAt }; };
    const onA = await view(a);
    expect(onA.reason).toBe('new, one minute');
    // Its own store held the two-hour ban; the later decision stands, at once and after every catch-up.
    expect(await view(b)).toEqual(onA);
    await sleep(1500);
    expect(await view(b)).toEqual(onA);
  }, 30_000);

  it('every node restarted after Redis lost its data: what they hold is written back', async () => {
    const ip = '127.0.61.40';
    expect((await api(a, 'PUT', `/api/blacklist/${ip}`, { ttlSeconds: 600, reason: 'before the wipe' })).status).toBe(200);
    await within(() => listed(b, ip), 3000);
    await stopNode(a);
    await stopNode(b);
    await redis.restart(); // empty
    a = await startNode({ port: a.port, admin: a.admin, dir: a.dir, file: a.file });
    b = await startNode({ port: b.port, admin: b.admin, dir: b.dir, file: b.file });
    const raw = new Redis(redis.url);
    try {
      const t0 = Date.now();
      while (Date.now() - t0 < 5000 && (await raw.hget('scrubber:bans', ip)) === null) await sleep(50);
      expect(await raw.hget('scrubber:bans', ip)).not.toBeNull();
    } finally { raw.disconnect(); }
    expect(await listed(a, ip)).toBe(true);
  }, 40_000);
});

if (!hasRedis) describe('two nodes on one Redis', () => { it.skip(redisSkipReason, () => {}); });
