// Upstream servers of each domain: one undici Pool per server, its health
// state and its active checker. Objects survive a config reload when the
// server's settings did not change, so health and warm connections carry over.
import fs from 'node:fs';
import tls from 'node:tls';
import type { Socket } from 'node:net';
import { Pool, buildConnector, errors } from 'undici';
import type { Config, DomainConfig } from '../config/schema.ts';
import { parseHostPort } from '../config/validate.ts';
import { healthPhase, initialHealth, nextHealth, phaseHealth, probe, probeOk, worthReporting, type Health, type HealthPhase, type ProbeResult, type UpstreamTls } from './health.ts';
import { RR_PERIOD, tryOrder } from './balancer.ts';

/** An extra CA bundle is added to the system roots, not put in their place. */
function upstreamTls(up: Config['upstream']): UpstreamTls {
  return up.caFile ? { rejectUnauthorized: up.rejectUnauthorized, ca: [...tls.rootCertificates, fs.readFileSync(up.caFile, 'utf8')] } : { rejectUnauthorized: up.rejectUnauthorized };
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

export class Upstream {
  readonly key: string;
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly pool: Pool;
  readonly tlsOptions: UpstreamTls;
  health: Health = initialHealth();
  domain: DomainConfig;
  private timer: NodeJS.Timeout | null = null;
  onChange: ((u: Upstream) => void) | null = null;
  /** Told when the state changes phase (healthPhase): the primary passes it to its workers. */
  onPhase: ((u: Upstream) => void) | null = null;
  /** In a worker process: the node's state is the primary's; a report that can change it goes there (relay), and
   *  this one's state is the primary's phase (mirror). Null: the state is kept here (one process, the primary). */
  relay: ((u: Upstream, ok: boolean) => void) | null = null;

  constructor(key: string, address: string, domain: DomainConfig, up: Config['upstream']) {
    const hp = parseHostPort(address)!;
    this.tlsOptions = upstreamTls(up);
    this.key = key;
    this.address = address;
    this.host = hp.host;
    this.port = hp.port;
    this.tls = domain.upstreamTls;
    this.domain = domain;
    const origin = `${this.tls ? 'https' : 'http'}://${address}`;
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

  /** The same in every process of the node (the key is not: a worker's pool settings are its share). */
  get id(): string { return `${this.domain.name} ${this.address}`; }

  /** Feeds the fall/rise state machine (active checks and real requests alike). */
  report(ok: boolean): void {
    // Nearly every request succeeds on an upstream that is fine: that changes nothing (no new state, nothing sent).
    if (!worthReporting(healthPhase(this.health), ok)) return;
    if (this.relay) { this.relay(this, ok); return; }
    const before = this.health;
    this.health = nextHealth(this.health, ok, this.domain.healthCheck.fall, this.domain.healthCheck.rise);
    if (before.healthy !== this.health.healthy) this.onChange?.(this);
    if (this.onPhase && healthPhase(before) !== healthPhase(this.health)) this.onPhase(this);
  }

  get phase(): HealthPhase { return healthPhase(this.health); }

  /** A worker's copy of the node's state, as the primary decided it. */
  mirror(p: HealthPhase): void { this.health = phaseHealth(p); }

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
}

const upstreamKey = (d: DomainConfig, address: string, up: Config['upstream']) =>
  [d.name, d.upstreamTls ? 'https' : 'http', address, up.connectTimeoutMs, up.maxConnections, up.keepAliveTimeoutMs,
    up.responseTimeoutMs, up.bodyTimeoutMs, up.rejectUnauthorized, up.caFile, JSON.stringify(d.healthCheck)].join('|');

export interface UpstreamsOptions {
  /** Told whenever an upstream goes down or comes back (the app logs it). */
  onHealthChange?: (u: Upstream) => void;
  /** Told whenever an upstream's state changes phase (the primary tells its workers). */
  onPhase?: (u: Upstream) => void;
  /** A worker process: the primary keeps the state and runs the active checks (one probe per interval for the
   *  node, not one per process); what this process's requests met goes to it when it can change the state. */
  relay?: (u: Upstream, ok: boolean) => void;
}

export class Upstreams {
  private byKey = new Map<string, Upstream>();
  groups = new Map<string, UpstreamGroup>();
  private readonly o: UpstreamsOptions;

  constructor(o: UpstreamsOptions = {}) { this.o = o; }

  /** Builds groups for a config, reusing unchanged upstreams; closes the ones that are gone. */
  apply(config: Config): void {
    const next = new Map<string, Upstream>();
    const groups = new Map<string, UpstreamGroup>();
    const get = (d: DomainConfig, a: string) => {
      const key = upstreamKey(d, a, config.upstream);
      let u = next.get(key) ?? this.byKey.get(key);
      if (!u) {
        u = new Upstream(key, a, d, config.upstream);
        u.relay = this.o.relay ?? null;
        // A worker's new upstream is 'ok' until the primary says otherwise, as the primary's own new one is.
        if (!u.relay) u.startChecks();
      }
      u.domain = d;
      u.onChange = this.o.onHealthChange ?? null;
      u.onPhase = this.o.onPhase ?? null;
      next.set(key, u);
      return u;
    };
    for (const d of config.domains) groups.set(d.name, new UpstreamGroup(d, d.upstreams.map((a) => get(d, a)), d.backup.map((a) => get(d, a))));
    for (const [key, u] of this.byKey) if (!next.has(key)) { u.stopChecks(); void u.pool.close().catch(() => {}); }
    this.byKey = next;
    this.groups = groups;
  }

  /** Every upstream's phase by id (what a worker starts from). */
  phases(): [string, HealthPhase][] { return [...this.byKey.values()].map((u) => [u.id, u.phase]); }

  /** A worker: the node's phase of the upstream `id`, as the primary decided it. */
  mirror(id: string, p: HealthPhase): void {
    for (const u of this.byKey.values()) if (u.id === id) u.mirror(p);
  }

  /** The primary: a report a worker passed up. An upstream a reload removed meanwhile is ignored. */
  reportFrom(id: string, ok: boolean): void {
    for (const u of this.byKey.values()) if (u.id === id) u.report(ok);
  }

  /** Shutdown, after the listeners drained: what is still in flight upstream has no client left to answer (a request
   *  kept running for its application's sake, see finishOnClientAbort), so it is cut rather than awaited. */
  async close(): Promise<void> {
    for (const u of this.byKey.values()) u.stopChecks();
    await Promise.all([...this.byKey.values()].map((u) => u.pool.destroy().catch(() => {})));
    this.byKey.clear();
  }
}
