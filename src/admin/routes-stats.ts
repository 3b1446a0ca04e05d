// Admin routes of statistics (SPEC.md §10): /metrics, /api/stats,
// /api/billing, /api/probe ("traceroute to server" in the seeds) and
// /api/domains for the dashboard. Input is checked before anything is done.
import type { AdminServer, AdminRequest } from './server.ts';
import { HttpError } from './server.ts';
import type { Config, DomainConfig } from '../config/schema.ts';
import type { Filter } from '../detect/filter.ts';
import type { Upstreams, Upstream } from '../upstream/upstreams.ts';
import type { Stats } from '../stats/index.ts';
import { probe } from '../upstream/health.ts';
import { BUCKET_SECONDS, attackPeriods } from '../stats/buckets.ts';
import { monthOf, monthRange } from '../stats/billing.ts';
import { findDomain, parseRange } from './query.ts';
import type { UpstreamQueue } from '../limits/upstream-queue.ts';

export interface StatsRouteDeps { stats: Stats; filter: Filter; upstreams: Upstreams; config(): Config; now(): number; queues: ReadonlyMap<string, UpstreamQueue> }

function requireDomain(r: AdminRequest, config: Config): DomainConfig {
  const name = r.url.searchParams.get('domain');
  if (!name) throw new HttpError(400, 'domain: missing (?domain=example.com)');
  const d = findDomain(config, name);
  if (!d) throw new HttpError(400, `domain: "${name}" is not a configured domain`);
  return d;
}

/** One upstream as the dashboard shows it. */
const upstreamView = (u: Upstream, role: 'main' | 'backup') => ({ address: u.address, role, healthy: u.healthy });

export function registerStatsRoutes(admin: AdminServer, deps: StatsRouteDeps): void {
  admin.route('GET', '/metrics', async ({ res }) => {
    const text = await deps.stats.registry.metrics();
    res.writeHead(200, { 'content-type': deps.stats.registry.contentType, 'cache-control': 'no-store' });
    res.end(text);
  });

  admin.route('GET', '/api/stats', (r) => {
    const d = requireDomain(r, deps.config());
    const range = parseRange(r.url.searchParams.get('from'), r.url.searchParams.get('to'), Math.floor(deps.now() / 1000));
    if ('error' in range) throw new HttpError(400, range.error);
    const buckets = deps.stats.buckets(d.name, range.from - (range.from % BUCKET_SECONDS), range.to);
    return { domain: d.name, bucketSeconds: BUCKET_SECONDS, from: range.from, to: range.to, attackPeriods: attackPeriods(buckets), buckets };
  });

  admin.route('GET', '/api/billing', (r) => {
    const d = requireDomain(r, deps.config());
    const month = r.url.searchParams.get('month') || monthOf(deps.now());
    if (!monthRange(month)) throw new HttpError(400, `month: "${month}" is not YYYY-MM`);
    return { domain: d.name, ...deps.stats.billing(d.name, month) };
  });

  admin.route('POST', '/api/probe', async (r) => {
    const d = requireDomain(r, deps.config());
    const group = deps.upstreams.groups.get(d.name);
    if (!group) throw new HttpError(400, `domain: "${d.name}" has no upstreams yet`);
    // Always an HTTP(S) request, whatever the health-check type: the point is to see the status the application gives.
    const hc = { type: (d.upstreamTls ? 'https' : 'http') as 'http' | 'https', path: d.healthCheck.path, timeoutMs: d.healthCheck.timeoutMs };
    const all = [...group.main.map((u) => [u, 'main'] as const), ...group.backup.map((u) => [u, 'backup'] as const)];
    const results = await Promise.all(all.map(async ([u, role]) => {
      const p = await probe(u.host, u.port, hc, d.name, u.tlsOptions);
      return { ...upstreamView(u, role), reachable: p.reachable, connectMs: p.connectMs, status: p.status, error: p.error };
    }));
    return { domain: d.name, path: hc.path, timeoutMs: hc.timeoutMs, probedAt: new Date(deps.now()).toISOString(), upstreams: results };
  });

  admin.route('GET', '/api/domains', () => {
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
          queue: { maxInflight: d.maxInflight, limit: q?.limit ?? 0, inFlight: q?.active ?? 0, waiting: q?.queued ?? 0 },
          // What attack mode judges by: the learned normal rate and latency (kept across restarts).
          attack: {
            under: a?.under ?? false, since: a?.under && a.since ? new Date(a.since).toISOString() : null, reason: a?.under ? a.reason : null,
            baselineRps: Math.round((a?.baselineRps ?? 0) * 10) / 10, baselineLatencyMs: Math.round(a?.baselineLatencyMs ?? 0),
            learnedSeconds: Math.round(a?.learned ?? 0),
          },
        };
      }),
    };
  });
}
