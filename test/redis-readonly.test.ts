// Redis reachable but refusing writes (a replica after a failover answers READONLY; a full one under noeviction
// answers OOM): no decision reaches the other nodes. Before 2026-12 /healthz said "ok" on every node all the while
// (review r1: it meant only "connected"); now it says "degraded" (still 200) with the reason, until writes go through.
import { afterAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Redis } from 'ioredis';
import { startOrigin, startProxy, request, sleep, domain, tempDir, type Origin, type Proxy } from './helpers/servers.ts';
import { findRedisServer, startRedis, type RedisServer } from './helpers/redis.ts';
import { STALL_MS, writeProblem } from '../src/store/redis-health.ts';

const HOST = 'ro.test';
const IP = '127.0.64.3';

async function within<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) { const v = await get(); if (ok(v)) return v; if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms (last: ${JSON.stringify(v)})`); await sleep(100); }
}

describe.skipIf(findRedisServer() === null)('Redis refusing writes', () => {
  let redis: RedisServer; let origin: Origin; let a: Proxy; let b: Proxy;
  afterAll(async () => { await a?.close(); await b?.close(); await redis?.close(); await origin?.close(); });
  const api = (p: Proxy, method: string, path: string, body?: unknown) =>
    request(`${p.adminUrl}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  const health = async (p: Proxy) => { const r = await api(p, 'GET', '/healthz'); expect(r.status).toBe(200); return JSON.parse(r.body) as Record<string, unknown>; };
  const listedOnB = async (ip: string) => JSON.parse((await api(b, 'GET', `/api/blacklist/${ip}`)).body).listed as boolean;

  it('a node that cannot share its decisions says degraded, naming why, and ok again once writes go through (logged once each way)', async () => {
    redis = await startRedis(); origin = await startOrigin();
    const lines: { msg: string; redis?: string }[] = [];
    const sink = new Writable({ write(chunk, _e, cb) { for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
    const cfg = () => ({ state: { dir: tempDir(), redis: { url: redis.url } }, domains: [domain(HOST, [origin.address])] });
    a = await startProxy(cfg(), { log: pino({ level: 'info' }, sink) }); b = await startProxy(cfg());
    expect(await health(a)).toEqual({ status: 'ok' });
    const raw = new Redis(redis.url);
    try {
      await raw.call('REPLICAOF', '127.0.0.1', '1'); // demoted (a failover elsewhere); its master is out of reach
      await sleep(300);
      expect((await api(a, 'PUT', `/api/blacklist/${IP}`, { ttlSeconds: 600, reason: 'x' })).status).toBe(200);
      const h = await within('degraded', () => health(a), (v) => v.status === 'degraded', 3000);
      expect(h).toMatchObject({ status: 'degraded', redis: 'refusing-writes' });
      expect(String(h.error)).toMatch(/READONLY|refused/);
      expect(await listedOnB(IP)).toBe(false);
      await sleep(2500); // still degraded while it lasts, said once in the log
      expect((await health(a)).status).toBe('degraded');
      expect(lines.filter((l) => /not reaching the other nodes/.test(l.msg))).toHaveLength(1);

      await raw.call('REPLICAOF', 'NO', 'ONE'); // promoted back: writes go through (the set-aside ban is retried)
      await within('ok again', () => health(a), (v) => v.status === 'ok', 8000);
      await within('the ban reaches B', () => listedOnB(IP), (v) => v, 5000);
      expect(lines.filter((l) => l.msg === 'redis: writes go through again')).toHaveLength(1);

      // Out of memory (noeviction): the same.
      await raw.config('SET', 'maxmemory-policy', 'noeviction');
      await raw.config('SET', 'maxmemory', '1');
      expect((await api(a, 'PUT', '/api/blacklist/127.0.64.4', { ttlSeconds: 600, reason: 'x' })).status).toBe(200);
      expect(await within('degraded (OOM)', () => health(a), (v) => v.status === 'degraded', 3000)).toMatchObject({ redis: 'refusing-writes' });
      await raw.config('SET', 'maxmemory', '0');
      await within('ok again (memory)', () => health(a), (v) => v.status === 'ok', 8000);
      await within('the second ban reaches B', () => listedOnB('127.0.64.4'), (v) => v, 5000);
    } finally { raw.disconnect(); }
  }, 40_000);
});

describe('the write problem (pure: time passed in)', () => {
  it('a refusal names itself; decisions waiting past STALL_MS without a write are a stall; else nothing', () => {
    const t = 1_000_000;
    expect(writeProblem('READONLY You can\'t write against a read only replica.', 1, t, t)).toEqual({ redis: 'refusing-writes', error: 'READONLY You can\'t write against a read only replica.' });
    expect(writeProblem(null, 3, t, t + STALL_MS)).toBeNull();
    expect(writeProblem(null, 3, t, t + STALL_MS + 1)).toEqual({ redis: 'writes-stalled', pending: 3, waitingMs: STALL_MS + 1 });
    expect(writeProblem(null, 0, t, t + 60_000)).toBeNull();
    expect(writeProblem(null, 2, null, t)).toBeNull();
  });
});
