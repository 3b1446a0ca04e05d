// Wires the parts together and owns their lifecycle: start, reload, drain.
// main.ts (the CLI) and the tests both start the proxy through here.
import type http from 'node:http';
import type { Config } from '../config/schema.ts';
import { loadConfigFile, type LoadResult } from '../config/load.ts';
import { Pipeline } from '../pipeline/pipeline.ts';
import { Listeners, loadCertificates } from '../listen/listeners.ts';
import { Upstreams } from '../upstream/upstreams.ts';
import { AdminServer, HttpError } from '../admin/server.ts';
import { openStore, type Db } from '../store/db.ts';
import { createFilter, type Filter } from '../detect/filter.ts';
import { createStats, type Stats } from '../stats/index.ts';
import { createLogger, type Logger } from '../log.ts';
import { startDemoOrigin } from '../demo/origin.ts';

export interface App {
  config: Config;
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

export async function startApp(config: Config, opts: { configFile?: string; log?: Logger } = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.log.level);
  const demo: http.Server | null = config.demo.enabled ? await startDemoOrigin(config.demo.host, config.demo.port) : null;
  const db: Db = openStore(config.state.dir);
  const upstreams = new Upstreams();
  let listeners: Listeners | null = null;
  const filter = createFilter(config, {
    db, log,
    closeSource: (s) => listeners?.connections.closeSource(s),
    setBlockList: (list) => listeners?.setBlockList(list),
  });
  const pipeline = new Pipeline(config, upstreams, filter, { record: () => {} });
  listeners = new Listeners(pipeline, config);
  const app: App = {
    config, pipeline, listeners, admin: null as unknown as AdminServer, filter, stats: null as unknown as Stats, upstreams, log,
    reload(next) {
      const r = next ?? (opts.configFile ? loadConfigFile(opts.configFile) : { ok: false as const, problems: ['(file): no config file to reload from'] });
      if (!r.ok) { log.warn({ problems: r.problems }, 'config reload refused; the running config stays'); return r; }
      // Listen addresses and the admin listener are bound once; a reload that moves them would silently not apply.
      const moved = ['listen', 'tls.listen', 'admin', 'state', 'workers'].filter((k) => JSON.stringify(pick(r.config, k)) !== JSON.stringify(pick(app.config, k)));
      if (moved.length) { const problems = moved.map((k) => `${k}: changing it needs a restart`); log.warn({ problems }, 'config reload refused; the running config stays'); return { ok: false, problems }; }
      try { loadCertificates(r.config); } catch (e) {
        const problems = [`tls.certs: ${(e as Error).message}`]; log.warn({ problems }, 'config reload refused; the running config stays'); return { ok: false, problems };
      }
      pipeline.reconfigure(r.config);
      listeners!.reconfigure(r.config);
      filter.reconfigure(r.config);
      app.stats.reconfigure(r.config);
      app.config = r.config;
      log.info({ domains: r.config.domains.length }, 'config reloaded');
      return { ok: true };
    },
    async close() {
      log.info('draining');
      await listeners!.close(app.config.shutdown.drainTimeoutMs);
      await app.admin.close();
      await filter.close();
      await app.stats.close();
      await upstreams.close();
      demo?.closeAllConnections();
      await new Promise<void>((r) => (demo ? demo.close(() => r()) : r()));
      db.close();
      log.info('stopped');
    },
  };
  const stats = createStats(config, { db, log, filter, upstreams, config: () => app.config, queues: pipeline.queues });
  (app as { stats: Stats }).stats = stats;
  pipeline.stats = stats;

  const admin = new AdminServer();
  {
    admin.token = config.admin.token;
    admin.route('GET', '/healthz', () => ({ status: 'ok' }), { auth: false });
    admin.route('POST', '/api/reload', () => {
      const r = app.reload();
      if (!r.ok) throw new HttpError(400, r.problems.join('; '));
      return { status: 'reloaded' };
    });
    filter.registerRoutes(admin);
    stats.registerRoutes(admin);
    await admin.listen(config.admin.host, config.admin.port);
    (app as { admin: AdminServer }).admin = admin;
  }
  await listeners.listen(config);
  log.info({ listen: listeners.addresses(), admin: admin.address() }, 'scrubber started');
  return app;
}

function pick(c: Config, key: string): unknown {
  return key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], c);
}
