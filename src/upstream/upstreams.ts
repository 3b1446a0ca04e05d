// Upstream servers of each domain: one undici Pool per server, its health
// state and its active checker. Objects survive a config reload when the
// server's settings did not change, so health and warm connections carry over.
import tls from 'node:tls';
import crypto from 'node:crypto';
import type { Socket } from 'node:net';
import { Pool, buildConnector, errors } from 'undici';
import type { Config, DomainConfig } from '../config/schema.ts';
import { parseHostPort } from '../config/validate.ts';
import { configFile } from '../config/files.ts';
import { changesNothing, initialHealth, nextHealth, OutcomeRuns, outcomesOf, probe, probeOk, type Health, type ProbeResult, type UpstreamTls } from './health.ts';
import { RR_PERIOD, hasRoom, tryOrder } from './balancer.ts';

/** An extra CA bundle is added to the system roots, not put in their place. */
function upstreamTls(up: Config['upstream']): UpstreamTls {
  return up.caFile ? { rejectUnauthorized: up.rejectUnauthorized, ca: [...tls.rootCertificates, configFile(up.caFile).toString('utf8')] } : { rejectUnauthorized: up.rejectUnauthorized };
}

/**
 * undici's own connectTimeout runs on its coarse "fast timers" (about a second
 * of slack), so a 300 ms timeout fires anywhere up to 1.3 s and 9 s + 9 s drifts
 * too. A connect is rare next to a request, so one precise timer per connect
 * is cheap; SPEC.md §3 counts attempts in units of this timeout.
 */
export function preciseConnector(opts: buildConnector.BuildOptions, timeoutMs: number): buildConnector.connector {
  const base = buildConnector({ ...opts, timeout: 0 });
  return (options, callback) => {
    let settled = false;
    let socket: Socket | undefined;
    const timer = timeoutMs > 0 ? setTimeout(() => {
      if (settled) return;
      settled = true;
      socket?.destroy();
      callback(new errors.ConnectTimeoutError(`Connect Timeout Error (${options.hostname}:${options.port}, timeout: ${timeoutMs}ms)`), null);
    }, timeoutMs) : null;
    // buildConnector's connector returns the socket it opened (its type says void).
    socket = (base as unknown as (o: buildConnector.Options, cb: buildConnector.Callback) => Socket | undefined)(options, (...args: Parameters<buildConnector.Callback>) => {
      if (settled) { args[1]?.destroy(); return; }
      settled = true;
      if (timer) clearTimeout(timer);
      callback(...args);
    });
  };
}

/** A worker sends what its requests met at most this often per upstream (health is a matter of seconds; a flaky
 *  upstream under load must not cost the primary a message per request). */
export const RELAY_MS = 50;
/** ... or at once when a batch has this many runs (an upstream flapping at a high rate). */
const MAX_RUNS = 256;

export class Upstream {
  readonly key: string;
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly pool: Pool;
  /** upstream.maxConnections of its pool (0: no cap), and the requests on it now, from dispatch until their response
   *  ended or failed (Forwarding counts them): at the cap, another would wait in undici's queue, unseen and untimed. */
  readonly capacity: number;
  busy = 0;
  readonly tlsOptions: UpstreamTls;
  health: Health = initialHealth();
  domain: DomainConfig;
  private timer: NodeJS.Timeout | null = null;
  onChange: ((u: Upstream) => void) | null = null;
  /** The same in every process of the node (the key is not: a worker's pool settings are its share). */
  readonly id: string;
  /** In a worker process: the node's state is the primary's; what this worker's requests met waits in `outcomes`
   *  and `relay` is told when a batch starts (Upstreams sends it), and `health` is the primary's as last heard
   *  (mirror). Null: the state is kept here (one process, the primary). */
  relay: ((u: Upstream) => void) | null = null;
  readonly outcomes = new OutcomeRuns();
  /** The same upstream as a reload rebuilt it (its settings changed; this one's pool is closing): a request in flight
   *  that tries it again (a connect retry, a failover) goes there. */
  replacedBy: Upstream | null = null;

  /** `tlsOptions`: read once per config by Upstreams.prepare (the CA bundle), not here, so building one cannot fail
   *  half way through a reload. */
  constructor(key: string, address: string, domain: DomainConfig, up: Config['upstream'], tlsOptions: UpstreamTls) {
    const hp = parseHostPort(address)!;
    this.tlsOptions = tlsOptions;
    this.key = key;
    this.address = address;
    this.host = hp.host;
    this.port = hp.port;
    this.tls = domain.upstreamTls;
    this.domain = domain;
    this.id = `${domain.name} ${address}`;
    const origin = `${this.tls ? 'https' : 'http'}://${address}`;
    this.capacity = up.maxConnections;
    this.pool = new Pool(origin, {
      connections: up.maxConnections || null,
      pipelining: 1,
      allowH2: false,
      keepAliveTimeout: up.keepAliveTimeoutMs,
      keepAliveMaxTimeout: up.keepAliveTimeoutMs,
      headersTimeout: up.responseTimeoutMs,
      bodyTimeout: up.bodyTimeoutMs,
      connect: preciseConnector(this.tls ? { ...this.tlsOptions, servername: domain.name } : {}, up.connectTimeoutMs),
    });
  }

  get healthy(): boolean { return this.health.healthy; }
  get full(): boolean { return this.capacity > 0 && this.busy >= this.capacity; }

  /** Feeds the fall/rise state machine (active checks and real requests alike). */
  report(ok: boolean): void {
    const hc = this.domain.healthCheck;
    if (this.relay) {
      if (this.outcomes.add(ok, this.health.healthy, Math.max(hc.fall, hc.rise)) || this.outcomes.length >= MAX_RUNS) this.relay(this);
      return;
    }
    // Nearly every request succeeds on an upstream that is fine: nothing to do, no new state object.
    if (changesNothing(this.health, ok)) return;
    const before = this.health.healthy;
    this.health = nextHealth(this.health, ok, hc.fall, hc.rise);
    if (before !== this.health.healthy) this.onChange?.(this);
  }

  /** The primary: a batch of what a worker's requests met, applied in order. */
  reportRuns(firstOk: boolean, runs: readonly number[]): void { for (const ok of outcomesOf(firstOk, runs)) this.report(ok); }

  /** A worker's copy of the node's state, as the primary decided it (only `healthy` is told: counts stay there). */
  mirror(healthy: boolean): void { this.health = { healthy, failures: 0, successes: 0 }; }

  probe(): Promise<ProbeResult> {
    return probe(this.host, this.port, this.domain.healthCheck, this.domain.name, this.tlsOptions);
  }

  startChecks(): void {
    this.stopChecks();
    // A probe slower than the interval (timeoutMs > intervalMs) must not pile up concurrent probes.
    let probing = false;
    const run = async () => {
      if (probing) return;
      probing = true;
      try { const r = await this.probe(); if (this.timer) this.report(probeOk(r, this.domain.healthCheck.type)); } finally { probing = false; }
    };
    this.timer = setInterval(run, this.domain.healthCheck.intervalMs);
    this.timer.unref();
  }

  stopChecks(): void { if (this.timer) clearInterval(this.timer); this.timer = null; }
}

export class UpstreamGroup {
  private rr = 0;
  readonly domain: DomainConfig;
  readonly main: Upstream[];
  readonly backup: Upstream[];
  constructor(domain: DomainConfig, main: Upstream[], backup: Upstream[]) { this.domain = domain; this.main = main; this.backup = backup; }
  /** The upstreams to try for one request, best first. */
  order(): Upstream[] {
    const o = tryOrder(this.main, this.backup, this.rr);
    this.rr = (this.rr + 1) % RR_PERIOD;
    return o;
  }
  all(): Upstream[] { return [...this.main, ...this.backup]; }
  /** One of the upstreams a request would be sent to has a free connection (the domain's queue asks). */
  hasRoom(): boolean { return hasRoom(this.main, this.backup); }
}

/** What an upstream is built from: one whose key a reload leaves as it was is kept (its health, its warm connections).
 *  `ca`: the CA bundle's digest, for an HTTPS upstream: a bundle replaced at the same path makes new ones (kept, they
 *  verified against the bundle read at start, however often it was reloaded). */
const upstreamKey = (d: DomainConfig, address: string, up: Config['upstream'], ca: string) =>
  [d.name, d.upstreamTls ? `https ${ca}` : 'http', address, up.connectTimeoutMs, up.maxConnections, up.keepAliveTimeoutMs,
    up.responseTimeoutMs, up.bodyTimeoutMs, up.rejectUnauthorized, up.caFile, JSON.stringify(d.healthCheck)].join('|');

export interface UpstreamsOptions {
  /** Told whenever an upstream goes down or comes back (the app logs it; the primary tells its workers). */
  onHealthChange?: (u: Upstream) => void;
  /** A worker process: the primary keeps the state and runs the active checks (one probe per interval for the
   *  node, not one per process); what this process's requests met goes to it in batches (OutcomeRuns). */
  relay?: (id: string, firstOk: boolean, runs: number[]) => void;
}

export class Upstreams {
  private byKey = new Map<string, Upstream>();
  private byId = new Map<string, Upstream>();
  groups = new Map<string, UpstreamGroup>();
  private readonly o: UpstreamsOptions;
  /** A worker: upstreams with a batch waiting, and the timer that sends them. */
  private readonly pending = new Set<Upstream>();
  private relayTimer: NodeJS.Timeout | null = null;

  constructor(o: UpstreamsOptions = {}) { this.o = o; }

  /** Builds groups for a config, reusing unchanged upstreams; closes the ones that are gone. */
  apply(config: Config): void { this.prepare(config)(); }

  /**
   * Reads what `config` needs from files (the CA bundle: what can fail, EISDIR or a file gone since the check) and
   * returns the step that puts it in use; nothing changes before that step. A reload prepares every part first, so a
   * failure leaves the running config whole.
   */
  prepare(config: Config): () => void {
    const tlsOptions = upstreamTls(config.upstream);
    const ca = tlsOptions.ca ? crypto.createHash('sha256').update(tlsOptions.ca.at(-1)!).digest('hex').slice(0, 16) : '';
    return () => this.commit(config, tlsOptions, ca);
  }

  private commit(config: Config, tlsOptions: UpstreamTls, ca: string): void {
    const next = new Map<string, Upstream>();
    const groups = new Map<string, UpstreamGroup>();
    const get = (d: DomainConfig, a: string) => {
      const key = upstreamKey(d, a, config.upstream, ca);
      let u = next.get(key) ?? this.byKey.get(key);
      if (!u) {
        u = new Upstream(key, a, d, config.upstream, tlsOptions);
        // Rebuilt by a reload that changed its settings: it is as healthy as it was (new, it would read healthy until
        // its first check, intervalMs away, and take traffic again if it was down).
        const before = this.byId.get(u.id);
        if (before) u.health = { ...before.health };
        // A worker's new upstream is healthy until the primary says otherwise, as the primary's own new one is.
        if (this.o.relay) u.relay = (x) => this.batched(x);
        else u.startChecks();
      }
      u.domain = d;
      u.onChange = this.o.onHealthChange ?? null;
      next.set(key, u);
      return u;
    };
    for (const d of config.domains) groups.set(d.name, new UpstreamGroup(d, d.upstreams.map((a) => get(d, a)), d.backup.map((a) => get(d, a))));
    const byId = new Map([...next.values()].map((u) => [u.id, u]));
    for (const [key, u] of this.byKey) if (!next.has(key)) { u.replacedBy = byId.get(u.id) ?? null; u.stopChecks(); void u.pool.close().catch(() => {}); }
    this.byKey = next;
    this.byId = byId;
    this.groups = groups;
  }

  /** Every upstream's health by id (what a worker starts from, and is told again with a reload). */
  healthById(): [string, boolean][] { return [...this.byKey.values()].map((u) => [u.id, u.healthy]); }

  /** A worker: the node's health of the upstream `id`, as the primary decided it. */
  mirror(id: string, healthy: boolean): void { this.byId.get(id)?.mirror(healthy); }

  /** The primary: a batch a worker sent. An upstream a reload removed meanwhile is ignored. */
  reportFrom(id: string, firstOk: boolean, runs: readonly number[]): void { this.byId.get(id)?.reportRuns(firstOk, runs); }

  private batched(u: Upstream): void {
    this.pending.add(u);
    if (u.outcomes.length >= MAX_RUNS) return this.sendBatches();
    if (!this.relayTimer) { this.relayTimer = setTimeout(() => this.sendBatches(), RELAY_MS); this.relayTimer.unref(); }
  }

  private sendBatches(): void {
    if (this.relayTimer) { clearTimeout(this.relayTimer); this.relayTimer = null; }
    for (const u of this.pending) { const b = u.outcomes.take(); if (b) this.o.relay!(u.id, b.firstOk, b.runs); }
    this.pending.clear();
  }

  /** Shutdown, after the listeners drained: what is still in flight upstream has no client left to answer (a request
   *  kept running for its application's sake, see finishOnClientAbort), so it is cut rather than awaited. */
  async close(): Promise<void> {
    if (this.o.relay) this.sendBatches();
    for (const u of this.byKey.values()) u.stopChecks();
    await Promise.all([...this.byKey.values()].map((u) => u.pool.destroy().catch(() => {})));
    this.byKey.clear();
  }
}
