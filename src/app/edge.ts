// The part of the object graph that serves traffic: the runtime, the
// upstreams, the filter, the request pipeline and the listeners, wired
// together. One process builds it once (app.ts); with worker processes each
// worker builds its own (worker.ts) and the primary builds none.
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import type { DecisionBus } from '../decisions/bus.ts';
import type { FilterStore, SqliteFilterStore } from '../store/filter-store.ts';
import type { RedisBusOptions } from '../store/redis-keys.ts';
import type { Db } from '../store/db.ts';
import type { Filter } from '../detect/filter.ts';
import type { Observation } from '../observe/observation.ts';
import { Pipeline } from '../pipeline/pipeline.ts';
import { buildRuntime, type RuntimeRef } from '../pipeline/runtime.ts';
import { Listeners } from '../listen/listeners.ts';
import { certFiles } from '../listen/certs.ts';
import { passthroughObservation, type PassthroughEvent } from '../listen/passthrough.ts';
import { Upstreams, type Upstream, type UpstreamsOptions } from '../upstream/upstreams.ts';
import { OriginGuard } from '../limits/origin-guard.ts';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createFilter, type FilterDeps } from './build-filter.ts';

export interface Edge {
  runtime: RuntimeRef;
  upstreams: Upstreams;
  filter: Filter;
  pipeline: Pipeline;
  listeners: Listeners;
  /** Where every finished request is told; statistics add themselves. */
  observers: ((o: Observation) => void)[];
  /** Each domain's upstream queue, its learned limit and the sources' shares of its origin (stepped by the owner's tick). */
  origin: OriginGuard;
  /** Steps the origin guard (every tick), telling it the proxy's own event-loop delay; stop() ends the measuring. */
  originTick: { step(): void; stop(): void };
  /** Where every passthrough connection is told once it ended (or failed to reach an upstream): statistics only. */
  passthroughs: ((o: Observation) => void)[];
}

export interface EdgeDeps {
  log: Logger; now: () => number; store: FilterStore; bus: DecisionBus; secret: Buffer; db?: Db;
  /** A worker process: upstream health is the primary's (it logs the changes); what requests met goes up in batches. */
  upstreamRelay?: UpstreamsOptions['relay'];
  /** A worker process: each domain's seconds of traffic go to the primary, which judges attack mode (FilterDeps). */
  attackSamples?: FilterDeps['attackSamples'];
}

/** Upstreams that log their health changes (one line per change, never per request). */
export function loggedUpstreams(log: Logger, config: Config, also?: (u: Upstream) => void): Upstreams {
  const upstreams = new Upstreams({
    onHealthChange: (u) => {
      if (u.healthy) log.info({ domain: u.domain.name, upstream: u.address }, 'upstream up');
      else log.warn({ domain: u.domain.name, upstream: u.address }, 'upstream down');
      also?.(u);
    },
  });
  upstreams.apply(config);
  return upstreams;
}

export function buildEdge(config: Config, deps: EdgeDeps): Edge {
  const runtime: RuntimeRef = { current: buildRuntime(config) };
  const relay = deps.upstreamRelay;
  const upstreams = relay ? new Upstreams({ relay }) : loggedUpstreams(deps.log, config);
  if (relay) upstreams.apply(config);
  // The origin guard and the filter know of each other: the filter asks whether an origin is saturated (attack mode),
  // the guard reports a source persistently over its share (the filter bans it when its mode allows).
  // Its queues ask the domain's upstreams, as the last reload built them, for a free connection.
  const origin = new OriginGuard(config, {
    now: deps.now, onOverShare: (source, domain, reason) => filter.banOverShare(source, domain, reason),
    room: (domain) => upstreams.groups.get(domain)?.hasRoom() ?? true,
    // What the domains' endpoints usually answered in before a restart: the detector read it with the rest it learned.
    learnedEndpoints: (domain) => filter.detector.knowledge.peek(domain)?.restoredEndpoints,
  });
  const filter = createFilter(config, {
    db: deps.db, log: deps.log, now: deps.now, store: deps.store, bus: deps.bus, secret: deps.secret,
    saturated: (d, t) => origin.takeSaturated(d, t), heavy: (d, source) => origin.heavy(d, source), attackSamples: deps.attackSamples,
    endpointsOf: (d) => origin.endpointsOf(d),
  });
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
  const listeners = new Listeners(pipeline, config);
  const passthroughs: ((o: Observation) => void)[] = [];
  // A passthrough connection has no request the pipeline could observe. For attack mode each one counts in its
  // domain's traffic as a request, a failed upstream connect as an upstream error (the source was already counted
  // at accept, by the connection rules); statistics get it once it ended, or at once when no upstream took it.
  listeners.onPassthrough = (e: PassthroughEvent) => {
    const failed = e.outcome === 'connect-refused' || e.outcome === 'connect-timeout';
    if (e.end === undefined) {
      const t = detector.knowledge.of(e.domain).traffic;
      t.requests++;
      if (failed) t.upstreamErrors++;
    }
    if (e.end !== undefined || failed) { const o = passthroughObservation(e); for (const fn of passthroughs) fn(o); }
  };
  filter.decisions.watch({ onBan: (s) => listeners.connections.closeSource(s) });
  return { runtime, upstreams, filter, pipeline, listeners, observers, passthroughs, origin, originTick: ownLagTicker(origin) };
}

/** monitorEventLoopDelay's sampling interval (ms). */
const LAG_RESOLUTION_MS = 5;

/**
 * The proxy's own event-loop delay (p90 since the last step), for the adaptive limits: their samples are timed in
 * this loop, so a proxy busy with its own work would otherwise read its lag as the origin's and shrink the limit.
 */
export function ownLagTicker(origin: Pick<OriginGuard, 'tick'>): { step(): void; stop(): void } {
  const h = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  h.enable();
  return {
    step() {
      // The histogram records each whole interval between its timer's runs: an idle loop reads its resolution. The
      // mean is taken off every fair-share sample, so only the delay past the resolution is the loop's own.
      const lag = h.count > 0 ? h.percentile(90) / 1e6 : 0, mean = h.count > 0 ? Math.max(0, h.mean / 1e6 - LAG_RESOLUTION_MS) : 0;
      h.reset();
      origin.tick(performance.now(), lag, mean);
    },
    stop() { h.disable(); },
  };
}

/** A reloaded config (already checked): one new runtime, and the parts that span requests follow it. What can throw
 *  (building the runtime; reading the CA bundle and the certificates: a file changed since the check) is done first,
 *  so that a throw leaves every part on the running config. */
export function applyConfig(edge: Edge, config: Config): void {
  const runtime = buildRuntime(config);
  const upstreams = edge.upstreams.prepare(config);
  const files = certFiles(config);
  edge.runtime.current = runtime;
  upstreams();
  edge.pipeline.reconfigure(config);
  edge.listeners.reconfigure(config, files);
  edge.filter.reconfigure(config);
}

/** What a RedisBus keeps in the node's store: its queue of decisions not yet written (while Redis is away) and the
 *  Redis epoch it last reconciled with. */
export function redisLocal(store: SqliteFilterStore): Pick<RedisBusOptions, 'queue' | 'epoch' | 'keepSecret'> {
  return {
    queue: { load: () => store.loadRedisQueue(), save: (ds) => store.saveRedisQueue(ds) },
    epoch: { load: () => store.loadRedisEpoch(), save: (e) => store.saveRedisEpoch(e) },
    keepSecret: (s) => store.keepSecret(s),
  };
}

/**
 * A ban is written as soon as the callback that recorded it returns (all of that callback's bans in one transaction,
 * ~40 µs), not at the next periodic save, and before the process answers anything else: a process killed with -9
 * once a ban could be seen (listed by the API, a connection refused) comes back with it. A turn of the loop
 * (setImmediate) was not enough: the API could answer in the same turn, before the write. For the process that owns
 * the store (one process, or the primary: workers send their bans to it, several per message read).
 */
export function saveBansAtOnce(filter: Filter): void {
  let pending = false;
  // A store that fails (full disk, a lock held elsewhere: each try may wait busy_timeout) is left to the periodic
  // save for a second: a flood of bans must not become a flood of failing writes and error lines.
  let failedAt = -Infinity;
  filter.decisions.watch({
    onBan: () => {
      if (pending || performance.now() - failedAt < 1000) return;
      pending = true;
      process.nextTick(() => { pending = false; if (!filter.save()) failedAt = performance.now(); });
    },
  });
}

/** The last steps of a stop, the same for one process and for the primary: what holds state is closed in the order
 *  that loses nothing (the filter and statistics write before the store closes). False when the store refused the last
 *  writes (tried again for a while): the stop is then no clean one, and says what was lost. */
export async function closeState(p: { admin: { close(): Promise<void> }; filter: Filter; stats: { close(): Promise<boolean> }; upstreams: Upstreams; demo: import('node:http').Server | null; db: Db; log: Logger }): Promise<boolean> {
  await p.admin.close();
  // Requests and tunnels cut by the drain report as their sockets close, a turn or two later: counted before the last write.
  await new Promise((r) => setTimeout(r, 50));
  const filterSaved = await p.filter.close();
  const statsSaved = await p.stats.close();
  if (!filterSaved || !statsSaved) p.log.error({ filter: filterSaved, stats: statsSaved }, 'stopping: the store refused the last writes; bans, list changes or statistics since the last save are lost');
  await p.upstreams.close();
  p.demo?.closeAllConnections();
  await new Promise<void>((r) => (p.demo ? p.demo.close(() => r()) : r()));
  p.db.close();
  p.log.info('stopped');
  return filterSaved && statsSaved;
}
