// The primary of several worker processes (`workers` > 1, SPEC §9): it
// accepts every connection and hands it to the worker that owns its source
// (cluster/), and it is the one place that stores and shares what was decided:
// bans decided by any worker are recorded here once, stored, published to
// Redis and passed to every other worker; operators' decisions (admin API)
// and other nodes' (Redis) go down to every worker the same way. Statistics:
// workers send what they counted each second; the primary adds it up, stores
// it, and answers /metrics, /api/stats and billing as one proxy.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/schema.ts';
import type { LoadResult } from '../config/load.ts';
import type { Logger } from '../log.ts';
import type { Decision, DecisionBus, DecisionSnapshot } from '../decisions/bus.ts';
import { LocalBus } from '../decisions/bus.ts';
import { AdminServer } from '../admin/server.ts';
import { openStore } from '../store/db.ts';
import { SqliteFilterStore, type FilterStore } from '../store/filter-store.ts';
import { RedisBus } from '../store/redis-bus.ts';
import { startTicketKeys } from '../listen/ticket-keys.ts';
import { createStats } from '../stats/index.ts';
import { startDemoOrigin } from '../demo/origin.ts';
import { WorkerPool } from '../cluster/pool.ts';
import { Dispatcher } from '../cluster/dispatcher.ts';
import { WorkersView } from '../cluster/aggregate.ts';
import { NodeAttacks } from '../cluster/node-attacks.ts';
import { TokenSpread } from '../challenge/cookie.ts';
import { SharedTokens } from '../store/redis-tokens.ts';
import type { FromWorker, WorkerInit } from '../cluster/protocol.ts';
import { createFilter } from './build-filter.ts';
import { closeState, loggedUpstreams, redisLocal, saveBansAtOnce } from './edge.ts';
import { applyOrKeep, checkReload, clusterStats, refuseReload, wireAdmin, type ReloadResult } from './admin-wiring.ts';
import { TICK_MS } from './app.ts';
import { readConfigFiles } from '../config/files.ts';
import { logConfigWarnings } from '../config/advice.ts';

export interface Primary {
  readonly config: Config;
  readonly pool: WorkerPool;
  reload(next?: LoadResult): ReloadResult;
  /** As App.close. */
  close(): Promise<boolean>;
}

const ENTRY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker-entry.ts');

/** Every decision in force here goes down to the workers too: those made here (admin) and those from other nodes. */
class FanoutBus implements DecisionBus {
  private readonly inner: DecisionBus;
  private readonly down: (d: Decision) => void;
  constructor(inner: DecisionBus, down: (d: Decision) => void) { this.inner = inner; this.down = down; }
  get healthy(): boolean { return this.inner.healthy; }
  get writeProblem(): DecisionBus['writeProblem'] { return this.inner.writeProblem; }
  get clock(): DecisionBus['clock'] { return this.inner.clock; }
  // Not an attack state: the workers hear the node's own, as judged here (primary.ts tellAttack).
  publish(d: Decision): void { this.inner.publish(d); if (d.kind !== 'attack') this.down(d); }
  // Lifted early by the node's cap: its workers lift them too (they hold every ban of the node, for its requests).
  evicted(ips: string[]): void { this.inner.evicted?.(ips); for (const ip of ips) this.down({ kind: 'unban', ip }); }
  subscribe(fn: (d: Decision) => void): void { this.inner.subscribe((d) => { fn(d); if (d.kind !== 'attack') this.down(d); }); }
  snapshot(now: number, local?: DecisionSnapshot) { return this.inner.snapshot(now, local); }
  secret(local: Buffer) { return this.inner.secret(local); }
  watchSecret(fn: (s: Buffer) => void) { this.inner.watchSecret?.(fn); }
  close() { return this.inner.close(); }
}

export async function startPrimary(config: Config, opts: { configFile?: string; log: Logger }): Promise<Primary> {
  const log = opts.log;
  const now = Date.now;
  let current = config;
  // The certificates, keys and CA bundle as read now: what every worker builds its TLS from (config/files.ts).
  let files = readConfigFiles(config);
  const demo: http.Server | null = config.demo.enabled ? await startDemoOrigin(config.demo.host, config.demo.port) : null;
  const db = openStore(config.state.dir);
  const store = new SqliteFilterStore(db);
  const redis: DecisionBus = config.state.redis.url ? new RedisBus({ url: config.state.redis.url, prefix: config.state.redis.prefix, logger: log.child({ mod: 'redis' }), ...redisLocal(store) }) : new LocalBus();
  let pool: WorkerPool | null = null;
  const bus = new FanoutBus(redis, (d) => pool?.broadcast({ t: 'decision', d }));
  let secret = await bus.secret(store.secret());
  // The shared secret taken up later (Redis reached after the start, or emptied): to every worker, as the ticket key
  // is, and to a worker started from then on, with the one before while the cookies signed with it still pass.
  let previous: { key: Buffer; until: number } | null = null;
  redis.watchSecret?.((s) => {
    if (!s.equals(secret)) previous = { key: secret, until: now() + current.filter.challenge.trustSeconds * 1000 * current.filter.timeScale };
    secret = s;
    pool?.broadcast({ t: 'secret', key: s.toString('base64') });
  });
  // The primary's detector judges attack mode for the node (on the workers' seconds), but sees no request: what it
  // learned of a domain's attack is stored with what a worker sends of the rest (static paths, body sizes).
  const ownStore: FilterStore = Object.assign(Object.create(store) as FilterStore, { putLearned() {} });
  // Its own seconds are empty (it forwards no request): the workers' come in as messages (NodeAttacks).
  const filter = createFilter(config, { log, now, store: ownStore, bus, secret, attackSamples: () => {} });
  await filter.decisions.join(now());
  saveBansAtOnce(filter);
  // The node's one health state of each upstream: the active checks run here only, the workers send what their
  // requests met (in batches), and every change of health goes down to them.
  const upstreams = loggedUpstreams(log, config, (u) => pool?.broadcast({ t: 'health', id: u.id, healthy: u.healthy }));
  const view = new WorkersView(filter);
  const stats = createStats(config, { db, log, filter: view, upstreams, config: () => current, queues: view.queues, cluster: clusterStats(config, log, () => current), clock: bus.clock });

  // One session ticket key for every worker (and every node on the Redis): sent to each at its start and on change.
  const tickets = await startTicketKeys(config, { now, store, bus: redis, apply: (key) => pool?.broadcast({ t: 'tickets', key: key.toString('base64') }), log });
  const init = (index: number): WorkerInit => {
    // A (re)started worker reads what the store has: every queued write goes in first.
    store.flush();
    return {
      index, workers: current.workers, config: current,
      bans: filter.bans(), whitelist: filter.whitelistEntries().filter((w) => w.origin === 'api'),
      offenders: [...store.loadOffenders()], learned: [...store.loadLearned()], secret: secret.toString('base64'),
      ...(previous && previous.until > now() ? { previousSecret: { key: previous.key.toString('base64'), until: previous.until } } : {}),
      ticketKey: (tickets?.current ?? randomBytes(48)).toString('base64'),
      health: upstreams.healthById(),
      attacks: nodeAttacks.underAttack(),
      files, revokedTokens: tokens.revokedIds(),
    };
  };
  // Attack mode is judged here, once for the node, on the sum of every worker's seconds of a domain; the workers are
  // told each change (and the other nodes, through the decisions, as a process alone would tell them).
  const nodeAttacks = new NodeAttacks(filter, (domain, a) => pool?.broadcast({ t: 'attack', domain, a }));
  filter.decisions.watch({ onRemoteAttack: (domain) => nodeAttacks.tell(domain, false) });
  // Where each challenge token was used from, over every worker (maxNetworksPerToken holds for the node).
  const tokens = new TokenSpread({ maxNetworks: config.filter.challenge.maxNetworksPerToken, maxTokens: config.filter.maxSources });
  // ... and over every node on Redis (store/redis-tokens.ts): a token over-shared anywhere is refused by every worker here.
  const shared = config.state.redis.url ? new SharedTokens({ url: config.state.redis.url, prefix: config.state.redis.prefix, logger: log.child({ mod: 'redis' }) }) : null;
  shared?.onRevoked((id) => { tokens.revoke(id, now()); pool?.broadcast({ t: 'revoke', id }); });
  const countShared = (id: string, net: string) => { const c = current.filter.challenge; shared?.network(id, net, c.maxNetworksPerToken, c.trustSeconds * 1000); };
  const onMessage = (index: number, m: FromWorker) => {
    if (m.t === 'decision') { if (m.d.kind === 'ban') filter.decisions.adopt(m.d.entry); }
    else if (m.t === 'samples') nodeAttacks.samples(index, m.s, now());
    else if (m.t === 'token') { if (!tokens.counted(m.id, m.net)) countShared(m.id, m.net); if (!tokens.useNetwork(m.id, m.net, now())) pool?.broadcast({ t: 'revoke', id: m.id }); }
    // To every worker too: the one that takes the source's connections while its own is replaced bans it for the grown time.
    else if (m.t === 'offender') { store.putOffender(m.ip, m.r); pool?.broadcast({ t: 'offender', ip: m.ip, r: m.r }); }
    else if (m.t === 'learned') store.putLearned(m.domain, nodeAttacks.learned(m.domain, m.l));
    else if (m.t === 'upstream') upstreams.reportFrom(m.id, m.firstOk, m.runs);
  };
  pool = new WorkerPool({
    entry: ENTRY, count: config.workers, log, init, onMessage, onExit: (index) => view.gone(index),
    banned: (source) => filter.decisions.has(source), watchdogMs: config.workerWatchdogMs, maxWaitingPerSource: () => current.limits.maxConnectionsPerSource,
    // Counted where Node's refusals at accept are (the BlockList's tally): scrubber_connections_dropped_at_accept_total.
    droppedBanned: () => { filter.decisions.blacklist.tally.refused++; },
    onReport: (index, r, pid) => {
      view.take(index, r, pid);
      stats.ingest(r.domains.map((d) => ({ domain: d.domain, t: d.t, c: Float64Array.from(d.c) })), r.globals.map((g) => ({ t: g.t, g: Float64Array.from(g.g) })));
    },
  });
  const workers = pool;
  const dispatcher = new Dispatcher(workers, filter.blockList, (source) => filter.isWhitelistedSource(source));
  const timer = setInterval(() => { filter.tick(); nodeAttacks.due(now()); }, TICK_MS);
  timer.unref();
  await workers.start();

  const admin = new AdminServer();
  const primary: Primary = {
    get config() { return current; },
    pool: workers,
    reload(next) {
      const r = checkReload(next, opts.configFile, current);
      if (!r.ok) return refuseReload(log, r.problems);
      let nextFiles: [string, string][];
      try { nextFiles = readConfigFiles(r.config); } catch (e) { return refuseReload(log, [`(reload): ${(e as Error).message}`]); }
      // The primary's own parts first: the config in force (the API's, a new worker's) and the workers' change only
      // once they took it, so a reload that fails leaves every process on the running config.
      const done = applyOrKeep(log, r.config, current, (c) => { upstreams.apply(c); filter.reconfigure(c); });
      if (!done.ok) return done;
      current = r.config;
      files = nextFiles;
      log.level = r.config.log.level;
      workers.broadcast({ t: 'reload', config: r.config, health: upstreams.healthById(), files });
      workers.watchdogMs = r.config.workerWatchdogMs;
      tokens.opts = { maxNetworks: r.config.filter.challenge.maxNetworksPerToken, maxTokens: r.config.filter.maxSources };
      log.info({ domains: r.config.domains.length, workers: r.config.workers }, 'config reloaded');
      logConfigWarnings(log, r.config);
      return done;
    },
    async close() {
      log.info('draining');
      dispatcher.close();
      // Each worker finishes its requests and sends its last counts before it exits.
      await workers.stop(current.shutdown.drainTimeoutMs);
      clearInterval(timer);
      tickets?.stop();
      await shared?.close();
      return closeState({ admin, filter, stats, upstreams, demo, db, log });
    },
  };
  admin.token = config.admin.token;
  wireAdmin(admin, {
    filter, view, stats, upstreams, now, queues: view.queues, config: () => current,
    reload: () => primary.reload(), bus, sync: async () => { await workers.collect(); stats.flush(); },
  });
  admin.route('GET', '/api/workers', async () => {
    await workers.collect();
    return { workers: workers.list().map((w) => ({ ...w, underAttack: view.underAttackIn(w.index) })) };
  });
  await admin.listen(config.admin.host, config.admin.port);
  await dispatcher.listen(config);
  logConfigWarnings(log, config);
  log.info({ listen: dispatcher.addresses(), admin: admin.address(), workers: config.workers }, 'scrubber started');
  return primary;
}
