// The queue of decisions a node has not written to Redis yet, alone (no Redis: what is tested is what it keeps,
// drops, takes back and saves). The node's store is the plain load/save pair the bus hands it.
import { describe, expect, it, vi } from 'vitest';
import { Redis } from 'ioredis';
import type { Decision } from '../src/decisions/bus.ts';
import { DecisionQueue } from '../src/store/redis-queue.ts';
import { parseMessage, pendingKey, redisKeys } from '../src/store/redis-keys.ts';
import { findRedisServer, startRedis } from './helpers/redis.ts';

const hasRedis = findRedisServer() !== null;

const silent = { info() {}, warn() {} };
const ban = (ip: string, at: number): Decision => ({ kind: 'ban', entry: { ip, reason: 'test', rule: 'test', since: at, expiresAt: at + 3_600_000 } });
const unban = (ip: string, at: number): Decision => ({ kind: 'unban', ip, at });
const ips = (ds: Decision[]) => ds.map((d) => (d.kind === 'ban' ? d.entry.ip : d.kind === 'unban' ? `-${d.ip}` : d.kind)).sort();

function queueOf(max: number) {
  const store = { saved: [] as Decision[], saves: 0, load: () => [] as Decision[], save(ds: Decision[]) { this.saved = ds; this.saves++; } };
  return { q: new DecisionQueue(max, store, silent), store };
}

describe('the Redis decision queue', () => {
  it('saves what a catch-up takes back after the bus closed (the last save came before it)', () => {
    const { q, store } = queueOf(2);
    const t = Date.now();
    q.put(unban('10.0.0.1', t), true);
    q.put(ban('10.0.0.2', t + 1), true);
    q.put(ban('10.0.0.3', t + 2), true); // the unban is dropped: remembered as never written
    q.close();
    const saves = store.saves;
    // A catch-up under way when the bus closed ends by taking back what the full queue dropped: saved again.
    q.requeue();
    expect(store.saves).toBe(saves + 1);
    expect(ips(store.saved)).toEqual(['-10.0.0.1', '10.0.0.2', '10.0.0.3']);
  });

  it('keeps what the full queue dropped across a restart, as never written', () => {
    const { q, store } = queueOf(2);
    const t = Date.now();
    q.put(unban('10.0.0.1', t), true);
    q.put(ban('10.0.0.2', t + 1), true);
    q.put(ban('10.0.0.3', t + 2), true); // the unban is dropped: never written, in force here
    q.close();
    expect(ips(store.saved)).toEqual(['-10.0.0.1', '10.0.0.2', '10.0.0.3']);
    // The next start: the same bound, the same queue, the unban again remembered as never written.
    const next = new DecisionQueue(2, { load: () => store.saved, save() {} }, silent);
    next.loadSaved();
    expect(next.size).toBe(2);
    expect(next.holds(pendingKey(unban('10.0.0.1', t)))).toBe(true);
    next.requeue();
    expect(next.size).toBe(3);
  });

  it('forgets the oldest of what the full queue dropped past as many again, so the saved copy stays bounded', () => {
    const warned: string[] = [];
    const store = { saved: [] as Decision[], load: () => [] as Decision[], save(ds: Decision[]) { this.saved = ds; } };
    const q = new DecisionQueue(2, store, { info() {}, warn: (_o, m) => warned.push(m ?? '') });
    const t = Date.now();
    for (let i = 1; i <= 7; i++) q.put(ban(`10.0.0.${i}`, t + i), true);
    q.close();
    // 2 queued, 2 dropped kept as never written, the 3 oldest forgotten (and said so).
    expect(ips(store.saved)).toEqual(['10.0.0.4', '10.0.0.5', '10.0.0.6', '10.0.0.7']);
    expect(q.holds(pendingKey(ban('10.0.0.3', t)))).toBe(false);
    expect(q.holds(pendingKey(ban('10.0.0.4', t)))).toBe(true);
    expect(warned.filter((m) => /forgotten/.test(m))).toHaveLength(1);
  });

  it.skipIf(!hasRedis)('a ban of this node that ran out while queued stands over no other node\'s ban on its address (real Redis)', async () => {
    const redis = await startRedis();
    const cmd = new Redis(redis.url);
    try {
      const { q } = queueOf(10);
      const t = Date.now();
      // Made while Redis was away, for a few minutes, run out before Redis came back: not written.
      q.put({ kind: 'ban', entry: { ip: '10.0.0.9', reason: 'test', rule: 'test', since: t - 5000, expiresAt: t - 1000 } }, true);
      expect(await q.write(cmd, redisKeys('q:'), 'node-a')).toBe(1);
      // Another node's ban on the address, made before it and for a day, read back by the catch-up: it is applied.
      expect(q.standsOver({ kind: 'ban', entry: { ip: '10.0.0.9', reason: 'test', rule: 'test', since: t - 10_000, expiresAt: t + 86_400_000 } })).toBe(false);
    } finally {
      cmd.disconnect();
      await redis.close();
    }
  });

  it.skipIf(!hasRedis)('Redis out of memory: a refused unban leaves the ban whole, a refused ban writes nothing; refused three times, a decision is kept and saved as never written (real Redis)', async () => {
    const redis = await startRedis();
    const cmd = new Redis(redis.url);
    try {
      const k = redisKeys('q:');
      const { q, store } = queueOf(10);
      const t = Date.now();
      q.put(ban('10.0.0.1', t), false);
      await q.write(cmd, k, 'node-a');
      expect(await cmd.hexists(k.bans, '10.0.0.1')).toBe(1);
      await cmd.config('SET', 'maxmemory', '1');
      q.put(unban('10.0.0.1', t + 1), false);
      q.put(ban('10.0.0.2', t + 2), false);
      for (let i = 0; i < 3; i++) await expect(q.write(cmd, k, 'node-a')).rejects.toThrow(/refused 2/);
      expect(await cmd.hexists(k.bans, '10.0.0.1')).toBe(1);
      expect(await cmd.zscore(k.exp, '10.0.0.1')).not.toBeNull();
      expect(await cmd.zscore(k.gone, 'b:10.0.0.1')).toBeNull();
      expect(await cmd.hexists(k.bans, '10.0.0.2')).toBe(0);
      expect(await cmd.zscore(k.exp, '10.0.0.2')).toBeNull();
      // Set aside after the third refusal: still this node's (the catch-up leaves them), and in its store.
      expect(q.size).toBe(0);
      expect(q.holds(pendingKey(unban('10.0.0.1', t)))).toBe(true);
      await vi.waitFor(() => expect(ips(store.saved)).toEqual(['-10.0.0.1', '10.0.0.2']), { timeout: 3000 });
      // Redis has room again: tried again once the queue is empty, and written.
      await cmd.config('SET', 'maxmemory', '0');
      expect(q.retryUnwritten()).toBe(true);
      await q.write(cmd, k, 'node-a');
      expect(await cmd.hexists(k.bans, '10.0.0.1')).toBe(0);
      expect(await cmd.zscore(k.gone, 'b:10.0.0.1')).toBe(String(t + 1));
      expect(await cmd.hexists(k.bans, '10.0.0.2')).toBe(1);
    } finally {
      cmd.disconnect();
      await redis.close();
    }
  });

  it.skipIf(!hasRedis)('does not write again a decision dropped from the full queue while its batch was being written (real Redis)', async () => {
    const redis = await startRedis();
    const cmd = new Redis(redis.url), sub = new Redis(redis.url);
    try {
      const k = redisKeys('q:');
      const published: string[] = [];
      await sub.subscribe(k.channel);
      sub.on('message', (_c, m) => { for (const d of parseMessage(m)?.ds ?? []) if (d.kind === 'ban') published.push(d.entry.ip); });
      const { q } = queueOf(2);
      const t = Date.now();
      q.put(ban('10.0.0.1', t), false);
      q.put(ban('10.0.0.2', t + 1), false);
      // The flush takes both; while Redis writes them, a third decision pushes the oldest out of the full queue.
      const writing = q.write(cmd, k, 'node-a');
      q.put(ban('10.0.0.3', t + 2), false);
      await writing;
      // Written, it is not "never written": neither queued again nor written a second time.
      q.requeue();
      expect(q.size).toBe(1);
      expect(q.holds(pendingKey(ban('10.0.0.1', t)))).toBe(false);
      await q.write(cmd, k, 'node-a');
      await vi.waitFor(() => expect(published.length).toBe(3));
      await new Promise((r) => setTimeout(r, 100));
      expect(published).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    } finally {
      cmd.disconnect(); sub.disconnect();
      await redis.close();
    }
  });
});
