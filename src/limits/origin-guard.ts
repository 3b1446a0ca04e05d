// What stands between the sources and each domain's origin: its upstream queue
// (fair between sources, ordered by standing), the concurrency limit of that
// queue learned from the origin's latency (AdaptiveLimit, on by default, with
// domains[].maxInflight as its ceiling), and each source's share of the
// origin's time (FairShare).
//
// Why together: they are fed by the same event — the origin answered (or
// failed) a request, after so many ms, with so many in flight and so many
// waiting — and they answer the questions of the same moments: may a request
// go now (the queue, whose limit follows the learned one), where does a
// waiting one stand (a source over its share of a saturated origin goes
// behind the others), is the origin saturated (a sign of attack that needs no
// history: attack mode asks once a second), and is a source persistently over
// its share (it is banned — the filter decides whether now). And, while the
// domain is under attack, one more: may a source without a history go at all
// — all of those share one slice of the origin (NewcomerSlice), since a
// rotating flood has no source to judge one by one.
//
// Sockets and timers stay at the edges: the flow reports samples, the queue
// keeps its own timeouts; every decision here takes its time from the
// injected clock, so it can be stepped on a fake one.
//
// Memory: per domain, one AdaptiveLimit window and its endpoints' baselines
// (at most 256), a FairShare bounded to
// SHARE_SOURCES sources (least recently seen evicted) and a NewcomerSlice (a few
// numbers).
import type { SlotHolder } from './holders.ts';
import type { Config, DomainConfig } from '../config/schema.ts';
import { AdaptiveLimit } from './adaptive-limit.ts';
import { checkedEndpoints, endpointOf } from './endpoint-baselines.ts';
import { UpstreamQueue } from './upstream-queue.ts';
import { FairShare, type ShareVerdict } from '../detect/fair-share.ts';
import { DomainOrigin } from './domain-origin.ts';

/** Sources whose origin time each domain remembers (about 0.7 KB each, measured: one typed array of buckets). */
const SHARE_SOURCES = 20_000;
/** The learned limit's ceiling when domains[].maxInflight gives none. */
const MAX_LEARNED = 1000;
/** A request in flight this long without an answer (and 10 × what answers take now) gives its place in the limit
 *  back while requests wait: long polls and long jobs must not hold a domain's limit, nor be read as latency. */
const OUTLIVED_MIN_MS = 1000;
const OUTLIVED_FACTOR = 10;

export type { SlotHolder };
export { DomainOrigin };

export interface OriginGuardDeps {
  now: () => number;
  /** A source over its share of a saturated origin for banAfterSeconds: ban it (the filter decides whether it may now). */
  onOverShare: (source: string, domain: string, reason: string) => void;
  /** Whether the domain's upstreams have a free connection now (UpstreamQueue.room); absent: always. */
  room?: (domain: string) => boolean;
  /** What the domain's endpoints answered in before a restart (EndpointBaselines.learned, from the state store). */
  learnedEndpoints?: (domain: string) => unknown;
}

export class OriginGuard {
  private readonly domains = new Map<string, DomainOrigin>();
  /** Each domain's queue by name (statistics and the admin API read them). */
  readonly queues = new Map<string, UpstreamQueue>();
  /** Domains the last reload removed, forgotten once idle. */
  private readonly removed = new Set<string>();
  private readonly deps: OriginGuardDeps;
  private config: Config;
  private sessionsBehind: ((source: string) => number) | null = null;
  /** The proxy's own mean event-loop delay lately (ms): every answer is timed in that loop, and what it adds is no origin time. */
  private meanLagMs = 0;

  constructor(config: Config, deps: OriginGuardDeps) { this.config = config; this.deps = deps; }

  /** The domain's part, made on first use. */
  of(domain: DomainConfig): DomainOrigin {
    let d = this.domains.get(domain.name);
    if (!d) {
      const l = this.config.limits, f = this.config.filter.fairShare;
      const share = new FairShare({ maxSources: Math.min(SHARE_SOURCES, this.config.filter.maxSources), overShareRatio: f.overShareRatio, persistMs: f.banAfterSeconds * 1000 });
      if (this.sessionsBehind) share.setSessionsBehind(this.sessionsBehind);
      // The queue serves the least used of the sources at the head of its line first (fair share of origin time).
      const usage = (source: string) => (this.config.filter.fairShare.enabled ? share.used(this.deps.now(), source) : 0);
      // Time held in the queue is taken out of the window a source's share is judged over (its pace: FairShare).
      const held = (source: string, on: boolean) => (on ? share.hold(this.deps.now(), source) : share.unhold(this.deps.now(), source));
      d = new DomainOrigin(domain.name, new UpstreamQueue(domain.maxInflight, l.queueTimeoutMs, l.maxQueued, usage, held), share);
      const room = this.deps.room, name = domain.name;
      if (room) d.queue.room = () => room(name);
      this.apply(d, domain);
      this.domains.set(name, d); this.queues.set(name, d.queue);
    }
    return d;
  }

  peek(name: string): DomainOrigin | undefined { return this.domains.get(name); }
  entries(): IterableIterator<[string, DomainOrigin]> { return this.domains.entries(); }

  /** What the domain's endpoints usually answer in, for the state store (kept across a restart): what its limit learned,
   *  or, before its first request made one, what was restored (a run without its traffic must not save it away). */
  endpointsOf(domain: string): [string, number][] | undefined {
    const l = this.domains.get(domain)?.limit;
    return l ? l.endpoints.learned() : checkedEndpoints(this.deps.learnedEndpoints?.(domain));
  }

  /** For attack mode, once a second per domain: see DomainOrigin.takeSaturated. */
  takeSaturated(domain: string, now: number): boolean | null {
    return this.domains.get(domain)?.takeSaturated(now) ?? null;
  }

  /**
   * Whether a source takes over its share of the domain's origin (overShareRatio × the typical source's time, the
   * last 20 s), saturated or not: attack mode asks it of the sources whose requests waited, since a crowd is many
   * people each asking little, and a swarm of browser-like bots, fewer sources each asking a lot.
   */
  heavy(domain: string, source: string): boolean {
    const d = this.domains.get(domain);
    if (!d || !this.config.filter.fairShare.enabled) return false;
    const now = this.deps.now();
    const typical = d.share.typical(now);
    return typical !== null && d.share.demandOf(now, source) >= this.config.filter.fairShare.overShareRatio * typical;
  }

  /** People behind one address (a NAT) count as that many sources in the share (fed by whoever counts sessions). */
  setSessionsBehind(f: (source: string) => number): void {
    this.sessionsBehind = f;
    for (const d of this.domains.values()) d.share.setSessionsBehind(f);
  }

  /**
   * The origin answered a request of `source` (response headers) or failed it, rttMs after it was dispatched.
   * `dropped`: a failure that says the origin is overloaded (503/504, timeout, refused, reset); `asked`: what the
   * request asked for, whose endpoint's usual latency the sample is judged against (endpointOf). The queue's limit
   * follows the learned one; a source persistently over its share of the saturated origin is reported for a ban.
   */
  sample(d: DomainOrigin, source: string, rttMs: number, dropped: boolean, asked?: { method: string; url: string }): void {
    const now = this.deps.now();
    const l = d.limit;
    if (l) {
      l.onSample(now, rttMs, d.queue.active, dropped, d.queue.queued, asked && endpointOf(asked.method, asked.url));
      const n = l.limit;
      if (n !== d.queue.limit) d.queue.setLimit(n);
    }
    if (!this.config.filter.fairShare.enabled) return;
    // Judged at every answer, saturated or not: a source's time over its share counts only while the origin is
    // saturated (the common, calm case resets it in record(), with no verdict made).
    const saturated = d.saturatedAt(now);
    d.noteSaturation(now, saturated);
    d.share.notePressure(now, saturated);
    d.share.record(now, source, Math.max(1, rttMs - this.meanLagMs), !saturated);
    if (!saturated) return;
    const v = d.share.assess(now, source, true);
    if (v.persistent) this.deps.onOverShare(source, d.name, overShareReason(v, d.share.opts.windowMs, this.config.filter.fairShare.banAfterSeconds));
  }

  /**
   * The class a waiting request of `source` takes in the fair queue at the least: a source over its share of a
   * saturated origin goes behind the others (2), one at half of it loses the place of sources with a history (1).
   */
  rankFloor(d: DomainOrigin, source: string): number {
    if (!this.config.filter.fairShare.enabled) return 0;
    const now = this.deps.now();
    if (!d.saturatedAt(now)) return 0;
    return d.share.assess(now, source, true).rankPenalty;
  }

  /**
   * The class a waiting request of `source` takes in the fair queue: its standing with the detector (`rank`: 0 a
   * history of browsing or trust, 1 unknown, 2 suspicious), where an unknown source with a history with this origin
   * (an API client that came back for a while: it never fetches pages and assets) counts as having one; then at the
   * least its fair-share floor (rankFloor).
   */
  queueClass(d: DomainOrigin, source: string, rank: number, attackSince: number): number {
    if (!this.config.filter.fairShare.enabled) return rank;
    const cls = rank === 1 && d.established(this.deps.now(), source, attackSince) ? 0 : rank;
    return Math.max(cls, this.rankFloor(d, source));
  }

  /**
   * While the domain is under attack (attackSince > 0), a request of a source without a history (rank ≥ 1 and not
   * established) takes a place in the newcomers' slice of the origin: all of them together may use what
   * filter.fairShare.newcomerSources sources (1) may before they are over their share (overShareRatio × the typical
   * source's origin time in the window).
   * Returns 1 when it took a place (the caller owes leaveSlice), 0 when it is no newcomer (or no attack), -1 when
   * the slice is used up: refuse it (429 when exempt from the challenge).
   */
  enterSlice(d: DomainOrigin, source: string, rank: number, attackSince: number): -1 | 0 | 1 {
    const f = this.config.filter.fairShare;
    if (attackSince <= 0 || !f.enabled || rank === 0) return 0;
    const now = this.deps.now();
    if (d.established(now, source, attackSince)) return 0;
    const typical = d.share.typicalUse(now);
    return d.slice.admit(now, typical === null ? null : f.newcomerSources * f.overShareRatio * typical) ? 1 : -1;
  }

  /** A request that held a place in the newcomers' slice is done with the origin: after originMs, or null (no answer). */
  leaveSlice(d: DomainOrigin, originMs: number | null): void { d.slice.leave(originMs); }

  /**
   * The periodic work (a timer at the edge, with performance.now()): while requests wait, those in flight far
   * longer than the origin answers give their places back. Never while the origin is saturated: then a request
   * may wait long in the application's own backlog, and letting another one in is what the limit is there to
   * prevent (long polls hold no origin work, so they do not saturate it: nothing answers slowly).
   */
  /** Every 250 ms; `ownLagMs` is the proxy's own event-loop delay lately (see AdaptiveLimit.ownLagMs). */
  tick(perfNow: number, ownLagMs = 0, meanLagMs = 0): void {
    this.meanLagMs = meanLagMs;
    // A domain a reload removed is forgotten once its last requests are out (its fair share held up to ~14 MB).
    for (const name of this.removed) {
      const d = this.domains.get(name);
      if (d && (d.queue.active > 0 || d.queue.queued > 0)) continue;
      this.domains.delete(name);
      this.queues.delete(name);
      this.removed.delete(name);
    }
    for (const d of this.domains.values()) {
      const l = d.limit;
      if (l) l.ownLagMs = ownLagMs;
      d.queue.kick(); // the upstreams' room changes without a request ending too (health, a failover): no waiter stays stuck
      if (d.queue.queued === 0 || d.holders.size === 0 || l?.saturated) continue;
      const line = Math.max(OUTLIVED_MIN_MS, OUTLIVED_FACTOR * Math.max(l?.shortRttMs ?? 0, l?.noLoadRttMs ?? 0));
      d.holders.forEach((h) => { if (perfNow - h.sentAt > line) h.outlived(); });
    }
  }

  /** A reload: new ceilings, queue settings, adaptive on or off. A removed domain's part keeps counting its last requests
   *  out, then goes (tick). */
  reconfigure(config: Config): void {
    this.config = config;
    this.removed.clear();
    const f = config.filter.fairShare;
    for (const [name, d] of this.domains) {
      const domain = config.domains.find((x) => x.name === name);
      d.queue.reconfigure(d.queue.limit, config.limits.queueTimeoutMs, config.limits.maxQueued);
      // What was learned stays (origin times, the limit); the lines it is judged by follow the new config.
      d.share.opts.overShareRatio = f.overShareRatio;
      d.share.opts.persistMs = f.banAfterSeconds * 1000;
      if (domain) this.apply(d, domain);
      else { d.limit = null; d.queue.setLimit(0); this.removed.add(name); }
    }
  }

  /** The queue's limit: learned (maxInflight its ceiling), or maxInflight exactly when adaptive limits are off. */
  private apply(d: DomainOrigin, domain: DomainConfig): void {
    const a = this.config.limits.adaptive;
    d.ceiling = domain.maxInflight;
    if (!a.enabled) {
      d.limit = null;
      d.queue.setLimit(domain.maxInflight);
      return;
    }
    const ceiling = domain.maxInflight > 0 ? domain.maxInflight : MAX_LEARNED;
    if (!d.limit) {
      d.limit = new AdaptiveLimit({ initialLimit: a.initialLimit, minLimit: Math.min(a.minLimit, ceiling), maxLimit: ceiling });
      d.limit.endpoints.restore(this.deps.learnedEndpoints?.(domain.name));
    } else {
      d.limit.opts.minLimit = Math.min(a.minLimit, ceiling);
      d.limit.opts.initialLimit = a.initialLimit;
      d.limit.setMaxLimit(ceiling);
    }
    d.queue.setLimit(d.limit.limit);
  }
}

/** The limit a domain's queue starts at (apply, before its first request): shown by the admin API until the domain
 *  has a queue (until 2026-11-29 it showed 0, "none", for a domain held to 20). Pure. */
export function startingLimit(limits: Config['limits'], domain: DomainConfig): number {
  const a = limits.adaptive;
  if (!a.enabled) return domain.maxInflight;
  const ceiling = domain.maxInflight > 0 ? domain.maxInflight : MAX_LEARNED;
  return Math.min(Math.max(a.initialLimit, Math.min(a.minLimit, ceiling)), ceiling);
}

function overShareReason(v: ShareVerdict, windowMs: number, seconds: number): string {
  const s = (ms: number) => (ms / 1000).toFixed(1);
  return `asked for ${s(v.usedMs)} s of origin time in ${s(windowMs)} s (at its pace when not held in the queue), ${v.ratio.toFixed(1)}× a typical source's ${s(v.typicalMs ?? 0)} s` +
    `${v.sessions > 1 ? ` (per session, ${v.sessions} sessions)` : ''}, for ${seconds} s while the origin was saturated`;
}
