// Statistics and billing (SPEC.md §7). The request path calls record(), which
// only adds into memory (recorder.ts); a timer samples the filter and flushes
// the deltas to the embedded store every few seconds, and close() flushes the
// rest, so nothing counted is lost on a clean restart.
import type { Config } from '../config/schema.ts';
import type { Db } from '../store/db.ts';
import type { Logger } from '../log.ts';
import type { Upstreams } from '../upstream/upstreams.ts';
import type { Observation } from '../observe/observation.ts';
import type { Registry } from 'prom-client';
import { Recorder, type FilterView } from './recorder.ts';
import { StatsStore, type DomainDelta, type GlobalDelta } from './store.ts';
import { createMetrics } from './metrics.ts';
import { BUCKET_SECONDS, F, FIELDS, GLOBAL_FIELDS, GLOBAL_MAX_FIELDS, toBucketJson, type BucketJson } from './buckets.ts';
import { bill, monthRange, type Bill } from './billing.ts';
import type { MetricsDeps, QueueView } from './metrics.ts';
import type { ClusterStats } from './cluster.ts';

export interface StatsDeps {
  db: Db; log: Logger; filter: FilterView; upstreams: Upstreams; config(): Config; queues: ReadonlyMap<string, QueueView>;
  /** With Redis: makes the cluster's side over this node's store (its outbox is then filled on every flush). */
  cluster?: (store: StatsStore) => ClusterStats;
  /** With Redis: this node's clock against Redis's (store/redis-clock.ts), for /metrics. */
  clock?: MetricsDeps['clock'];
}

export interface StatsOptions {
  /** How often the filter is sampled and deltas are written (default 5 s). */
  flushIntervalMs?: number;
  /** Clock, for tests of bucketing across time. */
  now?: () => number;
}

export interface Stats {
  /** The hot path: one finished request. */
  record(o: Observation): void;
  /** Bytes a domain's open tunnel carried since last told (Recorder.tunnelBytes). */
  tunnelBytes(domain: string, bytesIn: number, bytesOut: number): void;
  /** Deltas counted by a worker process (see Recorder.merge). */
  ingest(domains: DomainDelta[], globals: GlobalDelta[]): void;
  /** The last write, tried again for up to `retryMs` while the store refuses; false when what was counted is lost. */
  close(retryMs?: number): Promise<boolean>;
  /** Samples the filter and writes what is in memory (also done by the timer); false when the store refused it. */
  flush(): boolean;
  /** Buckets of a domain whose start is in [from, to) (Unix seconds), oldest first; includes the current, partial one. */
  buckets(domain: string, from: number, to: number): BucketJson[];
  /** The month's bill of a domain ("YYYY-MM", UTC). */
  billing(domain: string, month: string): Bill;
  /** Every node's totals (Redis); null when the node runs alone. */
  readonly cluster: ClusterStats | null;
  /** The month's bill over every node. */
  clusterBilling(domain: string, month: string): Promise<Bill>;
  /** Buckets over every node, this node's latest counts included (flushed first, as `buckets` and the bills do). */
  clusterBuckets(domain: string, from: number, to: number): Promise<BucketJson[]>;
  readonly registry: Registry;
}

export const DEFAULT_FLUSH_MS = 5000;
const PRUNE_EVERY_MS = 3600_000;

/** Runs the prune's steps with a turn of the event loop between each (requests go on meanwhile). */
async function pruneInSteps(steps: Generator<void>): Promise<void> {
  for (const _ of steps) await new Promise((r) => setImmediate(r));
}

export function createStats(config: Config, deps: StatsDeps, opts: StatsOptions = {}): Stats {
  const now = opts.now ?? Date.now;
  const recorder = new Recorder(now);
  const store = new StatsStore(deps.db);
  const cluster = deps.cluster?.(store) ?? null;
  if (cluster) store.outbox = true;
  const registry = createMetrics({ recorder, filter: deps.filter, upstreams: deps.upstreams, queues: deps.queues, clock: deps.clock });
  let lastSample = now();
  let lastPrune = 0;
  let pruning = false;
  let closed = false;

  const flush = (): boolean => {
    const t = now();
    let wrote = true;
    try { recorder.sample(deps.filter.snapshot(), (t - lastSample) / 1000); } catch (e) { deps.log.warn({ err: (e as Error).message }, 'stats: filter snapshot failed'); }
    lastSample = t;
    const p = recorder.pending();
    try {
      store.write(p.domains, p.globals);
      recorder.commit();
      if (cluster && (p.domains.length || p.globals.length)) void cluster.push();
    } catch (e) {
      wrote = false;
      recorder.keepBounded();
      deps.log.warn({ err: (e as Error).message }, 'stats: writing to the store failed; kept in memory, will retry');
    }
    if (t - lastPrune >= PRUNE_EVERY_MS && !pruning) {
      lastPrune = t;
      pruning = true;
      void pruneInSteps(store.pruneSteps(t / 1000, deps.config().stats.retentionDays))
        .catch((e) => deps.log.warn({ err: (e as Error).message }, 'stats: pruning old buckets failed'))
        .finally(() => { pruning = false; });
    }
    return wrote;
  };

  const timer = setInterval(flush, opts.flushIntervalMs ?? config.stats.flushIntervalMs ?? DEFAULT_FLUSH_MS);
  timer.unref();

  const stats: Stats = {
    registry,
    cluster,
    async clusterBilling(domain, month) {
      const r = monthRange(month);
      if (!r) throw new Error(`malformed month "${month}"`);
      if (!cluster) throw new Error('no cluster: state.redis.url is not set');
      if (!closed) flush();
      return bill(month, await cluster.billingSamples(domain, r.from, r.to), now());
    },
    async clusterBuckets(domain, from, to) {
      if (!cluster) throw new Error('no cluster: state.redis.url is not set');
      if (!closed) flush();
      return cluster.buckets(domain, from, to);
    },
    record: (o: Observation) => recorder.record(o),
    tunnelBytes: (d, i, o) => recorder.tunnelBytes(d, i, o),
    ingest: (domains, globals) => recorder.merge(domains, globals),
    flush,
    buckets(domain, from, to) {
      // While the store refuses writes, what is counted waits in memory: shown all the same (written later).
      const p = closed || flush() ? null : recorder.pending();
      const d = new Map(withPending(store.domainRows(domain, from, to), p?.domains.filter((x) => x.domain === domain).map((x) => [x.t, x.c] as const), FIELDS, from, to).map((r) => [r.t, r]));
      const g = new Map(withPending(store.globalRows(from, to), p?.globals.map((x) => [x.t, x.g] as const), GLOBAL_FIELDS, from, to).map((r) => [r.t, r]));
      const ts = [...new Set([...d.keys(), ...g.keys()])].sort((a, b) => a - b);
      return ts.map((t) => toBucketJson(t, d.get(t), g.get(t)));
    },
    billing(domain, month) {
      const r = monthRange(month);
      if (!r) throw new Error(`malformed month "${month}"`);
      const p = closed || flush() ? null : recorder.pending();
      const samples = withPending(store.billingSamples(domain, r.from, r.to), p?.domains.filter((x) => x.domain === domain)
        .map((x) => [x.t, Float64Array.of(x.c[F.passedBytesIn], x.c[F.passedBytesOut])] as const), ['bytesIn', 'bytesOut'], r.from, r.to);
      return bill(month, samples as { t: number; bytesIn: number; bytesOut: number }[], now());
    },
    async close(retryMs = 2000) {
      if (closed) return true;
      clearInterval(timer);
      let wrote = flush();
      for (const end = now() + retryMs; !wrote && now() < end;) {
        await new Promise((r) => setTimeout(r, 100));
        wrote = flush();
      }
      closed = true;
      await cluster?.close();
      return wrote;
    },
  };
  return stats;
}

export { BUCKET_SECONDS };

/** Store rows with deltas still in memory added as the store adds them (a sum; the blacklist size, a maximum), for the
 *  buckets in [from, to). Pure. */
function withPending<R extends Record<string, number>>(rows: R[], deltas: (readonly [number, Float64Array])[] | undefined, names: readonly string[], from: number, to: number): R[] {
  if (!deltas?.length) return rows;
  const by = new Map<number, Record<string, number>>(rows.map((r) => [r.t, { ...(r as unknown as Record<string, number>) }]));
  for (const [t, v] of deltas) {
    if (t < from || t >= to) continue;
    const row = by.get(t) ?? { t };
    names.forEach((n, i) => { row[n] = (GLOBAL_MAX_FIELDS as ReadonlySet<string>).has(n) ? Math.max(row[n] ?? 0, v[i]) : (row[n] ?? 0) + v[i]; });
    by.set(t, row);
  }
  return [...by.values()].sort((a, b) => a.t - b.t) as unknown as R[];
}
