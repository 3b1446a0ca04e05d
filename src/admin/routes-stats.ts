// Admin routes of statistics (SPEC.md §10): /metrics, /api/stats,
// /api/billing, /api/probe ("traceroute to server" in the seeds) and
// /api/domains for the dashboard. Input is checked before anything is done.
import type { AdminServer, AdminRequest } from './server.ts';
import { HttpError } from './server.ts';
import type { Config, DomainConfig } from '../config/schema.ts';
import type { Filter } from '../detect/filter.ts';
import type { Upstreams, Upstream } from '../upstream/upstreams.ts';
import type { Stats } from '../stats/index.ts';
import type { ClusterStats } from '../stats/cluster.ts';
import { probe } from '../upstream/health.ts';
import { startingLimit } from '../limits/origin-guard.ts';
import { BUCKET_SECONDS, attackPeriods } from '../stats/buckets.ts';
import { monthOf, monthRange } from '../stats/billing.ts';
import { findDomain, parseRange } from './query.ts';
import type { QueueView } from '../stats/metrics.ts';

export interface StatsRouteDeps {
  stats: Stats; filter: Pick<Filter, 'snapshot' | 'attackState'>; upstreams: Upstreams; config(): Config; now(): number; queues: ReadonlyMap<string, QueueView>;
  /** With worker processes: brings in what they counted since their last report, so that an answer is up to date. */
  sync?(): Promise<void>;
}

function requireDomain(r: AdminRequest, config: Config): DomainConfig {
  const name = r.url.searchParams.get('domain');
  if (!name) throw new HttpError(400, 'domain: missing (?domain=example.com)');
  const d = findDomain(config, name);
  if (!d) throw new HttpError(400, `domain: "${name}" is not a configured domain`);
  return d;
}

/** ?scope=node (default: this node's own figures) or ?scope=cluster (every node's, through Redis). */
function requireScope(r: AdminRequest, stats: Stats): ClusterStats | null {
  const scope = r.url.searchParams.get('scope') ?? 'node';
  if (scope === 'node' || scope === '') return null;
  if (scope !== 'cluster') throw new HttpError(400, `scope: "${scope}" is not node or cluster`);
  if (!stats.cluster) throw new HttpError(400, 'scope: cluster needs state.redis.url (this node runs alone)');
  return stats.cluster;
}

/** Redis out of reach is the service's trouble, not the caller's: 503, with what still works. */
async function clusterCall<T>(fn: () => Promise<T>): Promise<T> {
  try { return await fn(); } catch (e) { throw new HttpError(503, (e as Error).message); }
}

/** One upstream as the dashboard shows it. */
const upstreamView = (u: Upstream, role: 'main' | 'backup') => ({ address: u.address, role, healthy: u.healthy });

export function registerStatsRoutes(admin: AdminServer, deps: StatsRouteDeps): void {
  admin.route('GET', '/metrics', async ({ res }) => {
    // The totals /api/stats shows (connections refused at accept, the blacklist) are sampled at a flush: one now, as
    // /api/stats does, or a scrape lagged them by up to stats.flushIntervalMs. With workers, sync collects and flushes.
    if (deps.sync) await deps.sync(); else deps.stats.flush();
    const text = await deps.stats.registry.metrics();
    res.writeHead(200, { 'content-type': deps.stats.registry.contentType, 'cache-control': 'no-store' });
    res.end(text);
  });

  admin.route('GET', '/api/stats', async (r) => {
    const d = requireDomain(r, deps.config());
    await deps.sync?.();
    const range = parseRange(r.url.searchParams.get('from'), r.url.searchParams.get('to'), Math.floor(deps.now() / 1000));
    if ('error' in range) throw new HttpError(400, range.error);
    const cluster = requireScope(r, deps.stats);
    const from = range.from - (range.from % BUCKET_SECONDS);
    const buckets = cluster ? await clusterCall(() => deps.stats.clusterBuckets(d.name, from, range.to)) : deps.stats.buckets(d.name, from, range.to);
    return { domain: d.name, scope: cluster ? 'cluster' : 'node', bucketSeconds: BUCKET_SECONDS, from: range.from, to: range.to, attackPeriods: attackPeriods(buckets), buckets };
  });

  admin.route('GET', '/api/billing', async (r) => {
    const d = requireDomain(r, deps.config());
    const month = r.url.searchParams.get('month') || monthOf(deps.now());
    if (!monthRange(month)) throw new HttpError(400, `month: "${month}" is not YYYY-MM`);
    await deps.sync?.();
    const cluster = requireScope(r, deps.stats);
    const bill = cluster ? await clusterCall(() => deps.stats.clusterBilling(d.name, month)) : deps.stats.billing(d.name, month);
    return { domain: d.name, scope: cluster ? 'cluster' : 'node', ...bill };
  });

  admin.route('POST', '/api/probe', async (r) => {
    const d = requireDomain(r, deps.config());
    const group = deps.upstreams.groups.get(d.name);
    if (!group) throw new HttpError(400, `domain: "${d.name}" has no upstreams yet`);
    // Always an HTTP(S) request, whatever the health-check type: the point is to see the status the application gives.
    // A passthrough domain's upstreams speak TLS (the proxy only splices), whatever upstreamTls says.
    const hc = { type: (d.upstreamTls || d.passthrough ? 'https' : 'http') as 'http' | 'https', path: d.healthCheck.path, timeoutMs: d.healthCheck.timeoutMs };
    const all = [...group.main.map((u) => [u, 'main'] as const), ...group.backup.map((u) => [u, 'backup'] as const)];
    const results = await Promise.all(all.map(async ([u, role]) => {
      const p = await probe(u.host, u.port, hc, d.name, u.tlsOptions);
      return { ...upstreamView(u, role), reachable: p.reachable, connectMs: p.connectMs, status: p.status, error: p.error };
    }));
    return { domain: d.name, path: hc.path, timeoutMs: hc.timeoutMs, probedAt: new Date(deps.now()).toISOString(), upstreams: results };
  });

  admin.route('GET', '/api/domains', async () => {
    await deps.sync?.();
    const snap = deps.filter.snapshot();
    const attacked = new Set(snap.underAttack);
    return {
      blacklistSize: snap.blacklistSize,
      filterMode: deps.config().filter.mode,
      domains: deps.config().domains.map((d) => {
        const g = deps.upstreams.groups.get(d.name);
        const q = deps.queues.get(d.name);
        const a = deps.filter.attackState(d.name);
        return {
          name: d.name, aliases: d.aliases, underAttack: attacked.has(d.name), maintenance: d.maintenance.enabled,
          upstreams: g ? [...g.main.map((u) => upstreamView(u, 'main')), ...g.backup.map((u) => upstreamView(u, 'backup'))] : [],
          // limit: what the queue holds the domain to now (learned by the adaptive limit, or maxInflight; 0 = none).
          queue: { maxInflight: d.maxInflight, limit: q?.limit ?? startingLimit(deps.config().limits, d), inFlight: q?.active ?? 0, waiting: q?.queued ?? 0 },
          // What attack mode judges by: the learned normal rate and latency (kept across restarts).
          attack: {
            under: a?.under ?? false, since: a?.under && a.since ? new Date(a.since).toISOString() : null, reason: a?.under ? a.reason : null,
            baselineRps: Math.round((a?.baselineRps ?? 0) * 10) / 10, baselineLatencyMs: Math.round(a?.baselineLatencyMs ?? 0),
            learnedSeconds: Math.round(a?.learned ?? 0),
            // The upstream fails (or its queue is crowded) in this attack, here or on the node that found it: tightened.
            upstreamFailing: a?.under === true && a.upstreamFailing,
          },
        };
      }),
    };
  });
}
