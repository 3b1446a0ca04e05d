// The Redis side of cluster-wide statistics (stats/cluster.ts says why it is
// built this way). Key layout, under the same prefix as the decisions:
//   {prefix}stats:d:{domain}:{day}  hash "<bucket>.<column>" → sum over nodes
//   {prefix}stats:g:{day}           the same for the counters of no domain
//   {prefix}stats:applied           hash node id → last outbox seq applied
// One hash per day, so a month's bill is 31 reads, not 14,880.
import crypto from 'node:crypto';
import type { Redis } from 'ioredis';
import { redisClient } from './redis-client.ts';
import type { StatsStore } from '../stats/store.ts';
import { MAX_COLUMNS, billingSamplesOf, clusterBuckets, daysOf, rowsOf, type ClusterStats } from '../stats/cluster.ts';
import type { BucketJson } from '../stats/buckets.ts';
import type { BillingSample } from '../stats/billing.ts';
import { pingWithin } from './redis-health.ts';

// Applies one outbox row, unless this node already applied it (a crash between the push and the outbox delete);
// returns -1 without applying when Redis's epoch is not the one the node pushes to (its data was lost meanwhile).
const APPLY_LUA = `
if redis.call('GET', KEYS[2]) ~= ARGV[7] then return -1 end
local applied = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq <= applied then return 0 end
local p = cjson.decode(ARGV[5])
local maxc = {}
for _, c in ipairs(cjson.decode(ARGV[6])) do maxc[c] = true end
local ttl = tonumber(ARGV[4])
local function day(t) return t - (t % 86400) end
for _, d in ipairs(p.d) do
  local key = ARGV[3] .. 'stats:d:' .. d.domain .. ':' .. string.format('%d', day(d.t))
  for c, v in pairs(d.c) do redis.call('HINCRBYFLOAT', key, string.format('%d', d.t) .. '.' .. c, v) end
  redis.call('EXPIRE', key, ttl)
end
for _, g in ipairs(p.g) do
  local key = ARGV[3] .. 'stats:g:' .. string.format('%d', day(g.t))
  for c, v in pairs(g.c) do
    local f = string.format('%d', g.t) .. '.' .. c
    if maxc[c] then
      local cur = tonumber(redis.call('HGET', key, f) or '0')
      if v > cur then redis.call('HSET', key, f, v) end
    else
      redis.call('HINCRBYFLOAT', key, f, v)
    end
  end
  redis.call('EXPIRE', key, ttl)
end
redis.call('HSET', KEYS[1], ARGV[1], seq)
return 1
`;

/** Outbox rows pushed per round: a node back from a long cut catches up in steps, not one giant script. */
const PUSH_BATCH = 200;

export interface RedisClusterStatsOptions {
  url: string;
  store: StatsStore;
  nodeId: string;
  retentionDays(): number;
  prefix?: string;
  log: { warn(o: object, msg: string): void; info(o: object, msg: string): void };
  /** Heartbeat period, and how long a PING may go unanswered before the link is taken for dead and reconnected;
   *  default 1000 and 1500 ms, as the decision bus's. */
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  /** How long close() waits for its last push (what is not pushed stays in the outbox for the next start); 2000 ms. */
  closeTimeoutMs?: number;
}

export class RedisClusterStats implements ClusterStats {
  private readonly redis: Redis;
  private readonly o: RedisClusterStatsOptions;
  private readonly prefix: string;
  private pushing: Promise<void> | null = null;
  private failing = false;
  private closed = false;
  private pinging = false;
  private readonly beat: NodeJS.Timeout;

  constructor(o: RedisClusterStatsOptions) {
    this.o = o;
    this.prefix = o.prefix ?? 'scrubber:';
    // Like the decision bus: our outbox holds what could not be sent; ioredis must not queue or retry by itself.
    this.redis = redisClient(o.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 2000, commandTimeout: 10_000,
      retryStrategy: (n: number) => Math.min(100 * n, 1000), connectionName: `scrubber-stats-${o.nodeId}` }, null);
    this.redis.on('error', () => {});
    this.redis.on('ready', () => { void this.push(); });
    // A link that dies without a reset (a NAT or a firewall forgetting an idle connection) would stay "ready" for
    // minutes: every push and every scope=cluster query waiting out the 10 s command timeout. A PING not answered in
    // time drops the connection (disconnect(true): ioredis reconnects): queries answer 503 at once meanwhile, and a
    // push in flight fails (its rows stay in the outbox).
    this.beat = setInterval(() => this.heartbeat(), o.heartbeatMs ?? 1000);
    this.beat.unref();
  }

  private heartbeat(): void {
    if (this.closed || this.pinging || this.redis.status !== 'ready') return;
    this.pinging = true;
    pingWithin([this.redis], this.o.heartbeatTimeoutMs ?? 1500).then(async () => {
      // Emptied with the connection up (FLUSHALL, a failover to an empty replica): no 'ready' says so, and a node that
      // counts nothing new would never push, its whole history missing from the cluster's totals until its next
      // request. The epoch is looked at with every beat; a changed one has the node push its totals again.
      if (this.pushing || this.closed) return;
      const cur = await this.redis.get(`${this.prefix}epoch`);
      if (cur !== this.o.store.clusterEpoch()) void this.push();
    }, () => {
      if (this.closed || this.redis.status !== 'ready') return;
      this.o.log.warn({}, 'redis: the statistics connection does not answer; reconnecting');
      this.redis.disconnect(true);
    }).catch(() => {}).finally(() => { this.pinging = false; });
  }

  get backlog(): number { return this.o.store.outboxSize; }

  push(): Promise<void> {
    // One push at a time, in seq order; a caller during a push waits for that one.
    return (this.pushing ??= this.pushAll().finally(() => { this.pushing = null; }));
  }

  private async pushAll(): Promise<void> {
    if (this.closed || this.redis.status !== 'ready') return;
    const ttl = Math.ceil(this.o.retentionDays() * 86_400);
    try {
      let epoch = await this.epoch();
      for (let lost = 0; ;) {
        const rows = this.o.store.outboxRows(PUSH_BATCH);
        if (!rows.length) break;
        for (const r of rows) {
          const res = await this.redis.eval(APPLY_LUA, 2, `${this.prefix}stats:applied`, `${this.prefix}epoch`, this.o.nodeId, r.seq, this.prefix, ttl, r.body, JSON.stringify(MAX_COLUMNS), epoch);
          if (res === -1) {
            // Emptied under us: the outbox is rebuilt from the totals, and the push starts over (bounded, in case
            // something keeps deleting the epoch).
            if (++lost > 3) throw new Error('Redis keeps losing its data');
            epoch = await this.epoch();
            break;
          }
          this.o.store.outboxDone(r.seq);
        }
      }
      if (this.failing) { this.failing = false; this.o.log.info({}, 'redis: cluster statistics caught up'); }
    } catch (err) {
      if (!this.failing) this.o.log.warn({ err: (err as Error).message, backlog: this.backlog }, 'redis: pushing statistics failed; kept in the outbox, will retry');
      this.failing = true;
    }
  }

  /** Redis's epoch (set if there is none; the decision bus shares it). One that is not the epoch this node pushed to
   *  means the cluster's counters were lost: this node queues its whole totals again (StatsStore.rebuildOutbox). */
  private async epoch(): Promise<string> {
    const key = `${this.prefix}epoch`;
    await this.redis.set(key, crypto.randomBytes(8).toString('hex'), 'NX');
    const cur = (await this.redis.get(key))!;
    const mine = this.o.store.clusterEpoch();
    if (mine === null) {
      // First contact: what this node stored while it ran alone (before state.redis.url was set) is part of the
      // cluster's totals too, as a rebuild would push it (nothing to push for a new store).
      await this.o.store.rebuildOutbox(cur, () => new Promise((r) => setImmediate(r)));
    } else if (mine !== cur) {
      // In steps with a turn of the event loop between them: the proxy serves on while a large store is read.
      const rows = await this.o.store.rebuildOutbox(cur, () => new Promise((r) => setImmediate(r)));
      this.o.log.warn({ rows }, 'redis: the cluster statistics were lost (Redis restarted empty?); pushing this node\'s totals again');
    }
    return cur;
  }

  private async days(kind: 'd' | 'g', domain: string, from: number, to: number): Promise<Record<string, string>[]> {
    const keys = daysOf(from, to).map((day) => kind === 'd' ? `${this.prefix}stats:d:${domain}:${day}` : `${this.prefix}stats:g:${day}`);
    const p = this.redis.pipeline();
    for (const k of keys) p.hgetall(k);
    const res = (await p.exec()) ?? [];
    return res.map(([err, v]) => { if (err) throw err; return v as Record<string, string>; });
  }

  private ready(): void {
    if (this.redis.status !== 'ready') throw new Error('Redis is unreachable: cluster statistics are not available (this node\'s own still are, without scope=cluster)');
  }

  async buckets(domain: string, from: number, to: number): Promise<BucketJson[]> {
    this.ready();
    await this.push();
    const [d, g] = await Promise.all([this.days('d', domain, from, to), this.days('g', domain, from, to)]);
    return clusterBuckets(rowsOf(d, from, to), rowsOf(g, from, to));
  }

  async billingSamples(domain: string, from: number, to: number): Promise<BillingSample[]> {
    this.ready();
    await this.push();
    return billingSamplesOf(rowsOf(await this.days('d', domain, from, to), from, to));
  }

  async close(): Promise<void> {
    clearInterval(this.beat);
    // Bounded: on a link that does not answer, the last push would wait out the command timeout past the drain time.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.push(), new Promise((r) => { timer = setTimeout(r, this.o.closeTimeoutMs ?? 2000); })]);
    clearTimeout(timer);
    this.closed = true;
    this.redis.disconnect();
  }
}
