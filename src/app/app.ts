// The only place that builds the object graph, and owns its lifecycle: start,
// reload, drain. main.ts (the CLI) and the tests both start the proxy here.
// A reload builds one new runtime (config + derived tables) and swaps it in
// one assignment; the parts that span requests follow it in reconfigure().
import type http from 'node:http';
import type { Config } from '../config/schema.ts';
import { loadConfigFile, type LoadResult } from '../config/load.ts';
import { Pipeline } from '../pipeline/pipeline.ts';
import { OriginGuard } from '../limits/origin-guard.ts';
import { buildRuntime, type RuntimeRef } from '../pipeline/runtime.ts';
import { Listeners, loadCertificates } from '../listen/listeners.ts';
import { Upstreams } from '../upstream/upstreams.ts';
import { AdminServer, HttpError } from '../admin/server.ts';
import { registerFilterRoutes } from '../admin/routes-lists.ts';
import { registerStatsRoutes } from '../admin/routes-stats.ts';
import { registerDashboard } from '../admin/dashboard.ts';
import { openStore, type Db } from '../store/db.ts';
import type { Filter } from '../detect/filter.ts';
import type { Observation } from '../observe/observation.ts';
import { createStats, type Stats } from '../stats/index.ts';
import { createLogger, type Logger } from '../log.ts';
import { startDemoOrigin } from '../demo/origin.ts';
import { createFilter } from './build-filter.ts';
import { LocalBus, type DecisionBus } from '../decisions/bus.ts';
import { RedisBus } from '../store/redis-bus.ts';
import { SqliteFilterStore } from '../store/filter-store.ts';

export interface App {
  readonly config: Config;
  readonly pipeline: Pipeline;
  readonly listeners: Listeners;
  readonly admin: AdminServer;
  readonly filter: Filter;
  readonly stats: Stats;
  readonly upstreams: Upstreams;
  readonly log: Logger;
  /** Reloads from the config file (or the given result); refuses an invalid config and keeps the old one. */
  reload(next?: LoadResult): { ok: true } | { ok: false; problems: string[] };
  close(): Promise<void>;
}

/** Filter work (ban expiry, attack-mode steps, saving) runs on this period. */
const TICK_MS = 250;
/** Keys bound at start: a reload that changes them would silently not apply. */
const RESTART_KEYS = ['listen', 'tls.listen', 'tls.http2', 'admin', 'state', 'workers'];

export async function startApp(config: Config, opts: { configFile?: string; log?: Logger } = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.log.level);
  const now = Date.now;
  const demo: http.Server | null = config.demo.enabled ? await startDemoOrigin(config.demo.host, config.demo.port) : null;
  const db: Db = openStore(config.state.dir);
  const runtime: RuntimeRef = { current: buildRuntime(config) };
  const upstreams = new Upstreams((u) => {
    if (u.healthy) log.info({ domain: u.domain.name, upstream: u.address }, 'upstream up');
    else log.warn({ domain: u.domain.name, upstream: u.address }, 'upstream down');
  });
  upstreams.apply(config);
  // With Redis, decisions (bans, lists, attack state, the challenge secret) are shared with the other nodes.
  const bus: DecisionBus = config.state.redis.url ? new RedisBus({ url: config.state.redis.url, logger: log.child({ mod: 'redis' }) }) : new LocalBus();
  const store = new SqliteFilterStore(db);
  // The origin guard and the filter know of each other: the filter asks whether an origin is saturated (attack mode),
  // the guard reports a source persistently over its share (the filter bans it when its mode allows).
  const origin = new OriginGuard(config, { now, onOverShare: (source, domain, reason) => filter.banOverShare(source, domain, reason) });
  const filter = createFilter(config, { db, log, now, store, bus, secret: await bus.secret(store.secret()), saturated: (d, t) => origin.takeSaturated(d, t),
    heavy: (d, source) => origin.heavy(d, source) });
  await filter.decisions.join(now());
  const detector = filter.detector;
  const observers: ((o: Observation) => void)[] = [(o) => detector.observe(o)];
  const pipeline = new Pipeline({
    runtime, upstreams, detector, observers, origin,
    guard: {
      get blockList() { return filter.blockList; },
      onConnection: (_socket, source) => detector.onConnection(source),
      onClientError: (source, kind) => detector.onClientError(source, kind),
    },
  });
  const stats = createStats(config, { db, log, filter, upstreams, config: () => runtime.current.config, queues: pipeline.queues });
  observers.push((o) => stats.record(o));
  const listeners = new Listeners(pipeline, config);
  filter.decisions.watch({ onBan: (s) => listeners.connections.closeSource(s), setBlockList: (l) => listeners.setBlockList(l) });
  const timer = setInterval(() => { filter.tick(); origin.tick(performance.now()); }, TICK_MS);
  timer.unref();

  const refuse = (problems: string[]) => { log.warn({ problems }, 'config reload refused; the running config stays'); return { ok: false as const, problems }; };
  const app: App = {
    get config() { return runtime.current.config; },
    pipeline, listeners, filter, stats, upstreams, log, admin: new AdminServer(),
    reload(next) {
      const r = next ?? (opts.configFile ? loadConfigFile(opts.configFile) : { ok: false as const, problems: ['(file): no config file to reload from'] });
      if (!r.ok) return refuse(r.problems);
      const moved = RESTART_KEYS.filter((k) => JSON.stringify(pick(r.config, k)) !== JSON.stringify(pick(app.config, k)));
      if (moved.length) return refuse(moved.map((k) => `${k}: changing it needs a restart`));
      try { loadCertificates(r.config); } catch (e) { return refuse([`tls.certs: ${(e as Error).message}`]); }
      runtime.current = buildRuntime(r.config);
      upstreams.apply(r.config);
      pipeline.reconfigure(r.config);
      listeners.reconfigure(r.config);
      filter.reconfigure(r.config);
      log.info({ domains: r.config.domains.length }, 'config reloaded');
      return { ok: true };
    },
    async close() {
      log.info('draining');
      const drainMs = app.config.shutdown.drainTimeoutMs;
      // Tunnels have no request to finish: past the drain time they go, or the listeners would never close.
      const cut = setTimeout(() => pipeline.closeTunnels(), drainMs);
      await listeners.close(drainMs);
      clearTimeout(cut);
      clearInterval(timer);
      await app.admin.close();
      await filter.close();
      await stats.close();
      await upstreams.close();
      demo?.closeAllConnections();
      await new Promise<void>((r) => (demo ? demo.close(() => r()) : r()));
      db.close();
      log.info('stopped');
    },
  };

  const admin = app.admin;
  admin.token = config.admin.token;
  // Degraded, still 200: a node cut off from Redis keeps protecting on what it knows (SPEC §9).
  admin.route('GET', '/healthz', () => (bus.healthy ? { status: 'ok' } : { status: 'degraded', redis: 'unreachable' }), { auth: false });
  admin.route('POST', '/api/reload', () => {
    const r = app.reload();
    if (!r.ok) throw new HttpError(400, r.problems.join('; '));
    return { status: 'reloaded' };
  });
  registerFilterRoutes(admin, filter);
  registerStatsRoutes(admin, { stats, filter, upstreams, config: () => app.config, now, queues: pipeline.queues });
  registerDashboard(admin);
  await admin.listen(config.admin.host, config.admin.port);
  await listeners.listen(config);
  log.info({ listen: listeners.addresses(), admin: admin.address() }, 'scrubber started');
  return app;
}

function pick(c: Config, key: string): unknown {
  return key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], c);
}
