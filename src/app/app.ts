// The only place that builds the object graph of one process, and owns its
// lifecycle: start, reload, drain. main.ts (the CLI) and the tests both start
// the proxy here (with `workers` > 1 the CLI starts primary.ts instead, whose
// workers build the same edge). A reload builds one new runtime (config +
// derived tables) and swaps it in one assignment; the parts that span requests
// follow it in applyConfig().
import type http from 'node:http';
import type { Config } from '../config/schema.ts';
import type { LoadResult } from '../config/load.ts';
import { logConfigWarnings } from '../config/advice.ts';
import { shareTokenSpread, type SharedTokens } from '../store/redis-tokens.ts';
import type { Pipeline } from '../pipeline/pipeline.ts';
import type { Listeners } from '../listen/listeners.ts';
import type { Upstreams } from '../upstream/upstreams.ts';
import { AdminServer } from '../admin/server.ts';
import { openStore, type Db } from '../store/db.ts';
import type { Filter } from '../detect/filter.ts';
import { createStats, type Stats } from '../stats/index.ts';
import { createLogger, type Logger } from '../log.ts';
import { startDemoOrigin } from '../demo/origin.ts';
import { LocalBus, type DecisionBus } from '../decisions/bus.ts';
import { RedisBus } from '../store/redis-bus.ts';
import { SqliteFilterStore } from '../store/filter-store.ts';
import { startTicketKeys } from '../listen/ticket-keys.ts';
import { applyConfig, buildEdge, closeState, redisLocal, saveBansAtOnce } from './edge.ts';
import { applyOrKeep, checkReload, clusterStats, refuseReload, wireAdmin, type ReloadResult } from './admin-wiring.ts';

export interface App {
  readonly config: Config;
  readonly pipeline: Pipeline;
  readonly listeners: Listeners;
  readonly admin: AdminServer;
  readonly filter: Filter;
  readonly stats: Stats;
  readonly upstreams: Upstreams;
  readonly log: Logger;
  /** The challenge tokens' spread counted on Redis (state.redis.url), else null. */
  readonly sharedTokens: SharedTokens | null;
  /** Reloads from the config file (or the given result); refuses an invalid config and keeps the old one. */
  reload(next?: LoadResult): ReloadResult;
  /** Drains and stops; false when the store refused the last writes (state since the last save lost). */
  close(): Promise<boolean>;
}

/** Filter work (ban expiry, attack-mode steps, saving) runs on this period. */
export const TICK_MS = 250;

export async function startApp(config: Config, opts: { configFile?: string; log?: Logger } = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.log.level);
  const now = Date.now;
  const demo: http.Server | null = config.demo.enabled ? await startDemoOrigin(config.demo.host, config.demo.port) : null;
  const db: Db = openStore(config.state.dir);
  // With Redis, decisions (bans, lists, attack state, the challenge secret) are shared with the other nodes.
  const store = new SqliteFilterStore(db);
  const bus: DecisionBus = config.state.redis.url ? new RedisBus({ url: config.state.redis.url, prefix: config.state.redis.prefix, logger: log.child({ mod: 'redis' }), ...redisLocal(store) }) : new LocalBus();
  const edge = buildEdge(config, { db, log, now, store, bus, secret: await bus.secret(store.secret()) });
  const { filter, pipeline, listeners, upstreams, runtime } = edge;
  const shared = config.state.redis.url && filter.tokens ? shareTokenSpread(filter.tokens, config.state.redis, () => runtime.current.config, now, log) : null;
  await filter.decisions.join(now());
  saveBansAtOnce(filter);
  const stats = createStats(config, {
    db, log, filter, upstreams, config: () => runtime.current.config, queues: pipeline.queues,
    cluster: clusterStats(config, log, () => runtime.current.config), clock: bus.clock,
  });
  edge.observers.push((o) => stats.record(o));
  edge.passthroughs.push((o) => stats.record(o));
  edge.pipeline.tunnels.onBytes = (d, i, o) => stats.tunnelBytes(d, i, o);
  const timer = setInterval(() => { filter.tick(); edge.originTick.step(); }, TICK_MS);
  timer.unref();
  const tickets = await startTicketKeys(config, { now, store, bus, apply: (key) => listeners.setTicketKeys(key), log });

  const app: App = {
    get config() { return runtime.current.config; },
    pipeline, listeners, filter, stats, upstreams, log, admin: new AdminServer(), sharedTokens: shared,
    reload(next) {
      const r = checkReload(next, opts.configFile, app.config);
      if (!r.ok) return refuseReload(log, r.problems);
      const done = applyOrKeep(log, r.config, app.config, (c) => applyConfig(edge, c));
      if (!done.ok) return done;
      // Before the reload's own line, so that it is written at the new level (pino's children follow their parent's).
      log.level = r.config.log.level;
      log.info({ domains: r.config.domains.length }, 'config reloaded');
      logConfigWarnings(log, r.config);
      return done;
    },
    async close() {
      log.info('draining');
      const drainMs = app.config.shutdown.drainTimeoutMs;
      // Tunnels have no request to finish: past the drain time they go, or the listeners would never close.
      const cut = setTimeout(() => pipeline.closeTunnels(), drainMs);
      await listeners.close(drainMs);
      clearTimeout(cut);
      clearInterval(timer);
      tickets?.stop();
      edge.originTick.stop();
      await shared?.close();
      return closeState({ admin: app.admin, filter, stats, upstreams, demo, db, log });
    },
  };

  const admin = app.admin;
  admin.token = config.admin.token;
  wireAdmin(admin, {
    filter, stats, upstreams, now, queues: pipeline.queues, config: () => app.config,
    reload: () => app.reload(), bus,
  });
  await admin.listen(config.admin.host, config.admin.port);
  await listeners.listen(config);
  logConfigWarnings(log, config);
  log.info({ listen: listeners.addresses(), admin: admin.address() }, 'scrubber started');
  return app;
}
