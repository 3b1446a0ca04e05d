// What one process and the primary of several share: the check a reloaded
// config must pass, and the admin API over the filter and the statistics.
import { isDeepStrictEqual } from 'node:util';
import crypto from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import type { StatsDeps } from '../stats/index.ts';
import { RedisClusterStats } from '../store/redis-stats.ts';
import { loadConfigFile, type LoadResult } from '../config/load.ts';
import type { Filter } from '../detect/filter.ts';
import type { DecisionBus } from '../decisions/bus.ts';
import { loadCertificates } from '../listen/listeners.ts';
import { AdminServer, HttpError } from '../admin/server.ts';
import { registerFilterRoutes } from '../admin/routes-lists.ts';
import { registerStatsRoutes, type StatsRouteDeps } from '../admin/routes-stats.ts';
import { registerDashboard } from '../admin/dashboard.ts';

/** Keys bound at start: a reload that changes them would silently not apply. limits.maxHeaderBytes is Node's parser
 *  option, fixed when a listener is created; the demo origin is started once; the statistics timer is set once. */
const RESTART_KEYS = ['listen', 'tls.listen', 'tls.http2', 'tls.ticketKeyRotateSeconds', 'limits.maxHeaderBytes', 'admin', 'state', 'stats.flushIntervalMs', 'workers', 'demo'];

export type ReloadResult = { ok: true } | { ok: false; problems: string[] };

function pick(c: Config, key: string): unknown {
  return key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], c);
}

/** The config a reload may apply, or why not: invalid, a key that needs a restart, an unreadable certificate. */
export function checkReload(next: LoadResult | undefined, configFile: string | undefined, current: Config): { ok: true; config: Config } | { ok: false; problems: string[] } {
  const r = next ?? (configFile ? loadConfigFile(configFile) : { ok: false as const, problems: ['(file): no config file to reload from'] });
  if (!r.ok) return r;
  // By value: a listener written with its keys in another order (a tool that sorts them) is no change.
  const moved = RESTART_KEYS.filter((k) => !isDeepStrictEqual(pick(r.config, k), pick(current, k)));
  if (moved.length) return { ok: false, problems: moved.map((k) => `${k}: changing it needs a restart`) };
  try { loadCertificates(r.config); } catch (e) { return { ok: false, problems: [`tls.certs: ${(e as Error).message}`] }; }
  return { ok: true, config: r.config };
}

export function refuseReload(log: Logger, problems: string[]): ReloadResult {
  log.warn({ problems }, 'config reload refused; the running config stays');
  return { ok: false, problems };
}

/**
 * Puts a checked config in use with `apply`, or none of it: apply reads what can fail first (the CA bundle, the
 * certificates), but should a step still throw (a file changed since the check, a defect), the running config is
 * applied again and the reload is refused with the reason, as an invalid one is. An error let through would answer
 * the API with a 500 over a half-switched proxy, and end the process on a SIGHUP.
 */
export function applyOrKeep(log: Logger, next: Config, running: Config, apply: (c: Config) => void): ReloadResult {
  try { apply(next); return { ok: true }; } catch (e) {
    log.error({ err: e }, 'config reload failed while being applied; the running config is put back');
    try { apply(running); } catch (again) { log.error({ err: again }, 'putting the running config back failed too'); }
    return refuseReload(log, [`(reload): ${(e as Error).message}`]);
  }
}

/** With Redis, every statistics flush also feeds the cluster's totals (exactly once, through an outbox in the store). */
export function clusterStats(config: Config, log: Logger, current: () => Config): StatsDeps['cluster'] {
  const url = config.state.redis.url;
  if (!url) return undefined;
  return (st) => new RedisClusterStats({
    url, prefix: config.state.redis.prefix, store: st, nodeId: st.nodeId(() => crypto.randomUUID()), log: log.child({ mod: 'redis-stats' }),
    retentionDays: () => current().stats.retentionDays,
  });
}

export interface AdminWiring extends Omit<StatsRouteDeps, 'filter'> {
  filter: Filter;
  /** The filter as statistics and the dashboard read it (the primary's adds up its workers). */
  view?: StatsRouteDeps['filter'];
  reload(): ReloadResult;
  /** The decision bus: whether Redis is in reach, and this node's clock against Redis's (a bus on Redis only). */
  bus: Pick<DecisionBus, 'healthy' | 'clock' | 'writeProblem'>;
}

export function wireAdmin(admin: AdminServer, w: AdminWiring): void {
  // Degraded, still 200: a node cut off from Redis keeps protecting on what it knows (SPEC §9). So is one connected to a
  // Redis that refuses its writes (READONLY after a failover, OOM) or lets them wait: its decisions reach no other node.
  // With Redis and this node's clock off from Redis's by more than a second (store/redis-clock.ts): "clock": "skewed" and
  // the offset too (decisions across nodes are ordered by time); the node still works, so the status does not change.
  // A clock in step adds nothing: {"status":"ok"} as SPEC §10 has it (the offset is always in /metrics).
  admin.route('GET', '/healthz', () => {
    const c = w.bus.clock, clock = c?.skewed && c.offsetMs !== null ? { clock: 'skewed', clockOffsetMs: c.offsetMs } : {};
    if (!w.bus.healthy) return { status: 'degraded', redis: 'unreachable', ...clock };
    const writes = w.bus.writeProblem;
    return writes ? { status: 'degraded', ...writes, ...clock } : { status: 'ok', ...clock };
  }, { auth: false });
  admin.route('POST', '/api/reload', () => {
    const r = w.reload();
    if (!r.ok) throw new HttpError(400, r.problems.join('; '));
    return { status: 'reloaded' };
  });
  registerFilterRoutes(admin, w.filter);
  registerStatsRoutes(admin, { stats: w.stats, filter: w.view ?? w.filter, upstreams: w.upstreams, config: w.config, now: w.now, queues: w.queues, sync: w.sync });
  registerDashboard(admin);
}
