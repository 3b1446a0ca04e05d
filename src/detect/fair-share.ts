// Each source's share of the origin: how much origin time (dispatch to
// response, summed) it used in a sliding window, against the typical source.
//
// Why origin time and not requests: a browser-perfect bot breaks no rule of
// rate or headers — it fetches assets, keeps cookies, follows redirects — but
// navigating five times faster than a person, mostly on an expensive search,
// it takes many times a person's share of the origin, and a few hundred of
// them take the origin from everyone. Under saturation such a source should
// wait behind the others (a rank penalty for the fair queue), and one that
// keeps at it should be banned, whatever its headers.
//
// "Typical" is the median share among the sources with history (seen for at
// least historyMs and active in the window), per session: with too few of
// those (a proxy started mid-attack), among every active source. People
// behind a NAT share one address; the caller says how many distinct sessions
// (valid challenge cookies, session cookies) it saw from an address
// (sessionsBehind), and the address's allowance is multiplied by that.
//
// Nothing is judged while the origin is not saturated: using a lot of an idle
// origin harms no one.
//
// Memory: at most maxSources entries (least recently used evicted), each a
// fixed ring of buckets. Pure: time is passed in.

export interface FairShareOptions {
  /** Sliding window over which origin time is summed. */
  windowMs?: number;
  /** Bucket width; windowMs / bucketMs buckets per source. */
  bucketMs?: number;
  maxSources?: number;
  /** A source over this many times the typical share (per session) is over its share. */
  overShareRatio?: number;
  /** A source seen for this long counts as having history. */
  historyMs?: number;
  /** Fewer sources with history than this: the typical share is taken over all active sources. */
  minTypicalSources?: number;
  /** Over its share for this long while saturated: persistent (a ban candidate). */
  persistMs?: number;
  /** The typical share is recomputed at most this often. */
  recomputeMs?: number;
  /** The median is taken over at most this many sources (a stride sample beyond). */
  maxSample?: number;
  /** Distinct sessions seen behind an address (≥ 1); the lead feeds it. */
  sessionsBehind?: (source: string) => number;
}

export interface ShareVerdict {
  /** Origin ms this source used in the window. */
  usedMs: number;
  /** Typical origin ms per session of a source in the window; null while unknown. */
  typicalMs: number | null;
  sessions: number;
  /** usedMs / (typicalMs × sessions); 0 while the typical share is unknown. */
  ratio: number;
  /** Saturated and ratio ≥ overShareRatio. */
  overShare: boolean;
  /** For the fair queue: 0 none, 1 at half the over-share ratio, 2 over its share (saturated only). */
  rankPenalty: 0 | 1 | 2;
  /** Over its share for persistMs in a row, under saturation: ban it. */
  persistent: boolean;
}

interface Entry {
  firstSeen: number;
  /** When the source was last seen, to the bucket (record() reorders at most once a bucket). */
  lastSeen: number;
  /** Bucket number (time / bucketMs) each slot holds. */
  epochs: Float64Array;
  ms: Float64Array;
  overSince: number | null;
}

const DEFAULTS = {
  windowMs: 20_000,
  bucketMs: 1000,
  maxSources: 50_000,
  overShareRatio: 4,
  historyMs: 10_000,
  minTypicalSources: 5,
  persistMs: 15_000,
  recomputeMs: 1000,
  maxSample: 2001,
};

export class FairShare {
  readonly opts: typeof DEFAULTS;
  private readonly slots: number;
  private readonly entries = new Map<string, Entry>();
  private sessionsBehind: (source: string) => number;
  private typicalCache: number | null = null;
  private typicalAt = -Infinity;

  constructor(options: FairShareOptions = {}) {
    const o = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) if (options[k] !== undefined) o[k] = options[k]!;
    this.opts = o;
    this.slots = Math.max(1, Math.ceil(o.windowMs / o.bucketMs));
    this.sessionsBehind = options.sessionsBehind ?? (() => 1);
  }

  get size(): number { return this.entries.size; }

  /** Set (or replace) where the number of sessions behind an address comes from. */
  setSessionsBehind(f: (source: string) => number): void { this.sessionsBehind = f; }

  /** A request of `source` used the origin for originMs (answered or failed). */
  record(now: number, source: string, originMs: number, calm = false): void {
    if (!(originMs >= 0)) return;
    let e = this.entries.get(source);
    if (e) {
      // Re-inserted last (the Map's order is recency), at most once a bucket: a delete and a set on every answer cost
      // more than the rest of record(), and eviction needs the order only to the bucket.
      if (now - e.lastSeen >= this.opts.bucketMs) { this.entries.delete(source); this.entries.set(source, e); e.lastSeen = now; }
    } else {
      if (this.entries.size >= this.opts.maxSources) this.entries.delete(this.entries.keys().next().value!);
      e = { firstSeen: now, lastSeen: now, epochs: new Float64Array(this.slots).fill(-1), ms: new Float64Array(this.slots), overSince: null };
      this.entries.set(source, e);
    }
    // Not saturated: no time counts as over the share (what assess() would do, without its verdict object).
    if (calm) e.overSince = null;
    const b = Math.floor(now / this.opts.bucketMs);
    const i = b % this.slots;
    if (e.epochs[i] !== b) { e.epochs[i] = b; e.ms[i] = 0; }
    e.ms[i] += originMs;
  }

  /** Origin ms used by source in the window ending now. */
  used(now: number, source: string): number {
    const e = this.entries.get(source);
    return e ? this.sum(e, now) : 0;
  }

  /** When source first used the origin (as far as the table remembers), or null: a newcomer to it. */
  firstSeen(source: string): number | null { return this.entries.get(source)?.firstSeen ?? null; }

  private sum(e: Entry, now: number): number {
    const b = Math.floor(now / this.opts.bucketMs);
    let s = 0;
    for (let i = 0; i < this.slots; i++) if (e.epochs[i] > b - this.slots && e.epochs[i] <= b) s += e.ms[i];
    return s;
  }

  private sessionsOf(source: string): number {
    const n = this.sessionsBehind(source);
    return Number.isFinite(n) && n >= 1 ? n : 1;
  }

  /** The median origin ms per session over sources with history (or all active ones when too few have history). */
  typical(now: number): number | null {
    if (now - this.typicalAt < this.opts.recomputeMs) return this.typicalCache;
    this.typicalAt = now;
    const withHistory: number[] = [], all: number[] = [];
    const stride = Math.max(1, Math.ceil(this.entries.size / this.opts.maxSample));
    let k = 0;
    for (const [source, e] of this.entries) {
      if (k++ % stride !== 0) continue;
      if (now - e.lastSeen > this.opts.windowMs) continue;
      const used = this.sum(e, now);
      if (used <= 0) continue;
      const per = used / this.sessionsOf(source);
      all.push(per);
      if (now - e.firstSeen >= this.opts.historyMs) withHistory.push(per);
    }
    const xs = withHistory.length >= this.opts.minTypicalSources ? withHistory : all.length >= this.opts.minTypicalSources ? all : [];
    this.typicalCache = xs.length ? median(xs) : null;
    return this.typicalCache;
  }

  /** How source stands against the typical share; call it when deciding its rank (it also tracks persistence). */
  assess(now: number, source: string, saturated: boolean): ShareVerdict {
    const e = this.entries.get(source);
    const usedMs = e ? this.sum(e, now) : 0;
    const typicalMs = this.typical(now);
    const sessions = this.sessionsOf(source);
    const ratio = typicalMs && typicalMs > 0 ? usedMs / (typicalMs * sessions) : 0;
    const r = this.opts.overShareRatio;
    const overShare = saturated && ratio >= r;
    const rankPenalty: 0 | 1 | 2 = !saturated ? 0 : ratio >= r ? 2 : ratio >= r / 2 ? 1 : 0;
    let persistent = false;
    if (e) {
      if (overShare) { e.overSince ??= now; persistent = now - e.overSince >= this.opts.persistMs; }
      else if (!saturated || ratio < r / 2) e.overSince = null; // between r/2 and r under saturation: the clock keeps running, not reset by jitter
    }
    return { usedMs, typicalMs, sessions, ratio, overShare, rankPenalty, persistent };
  }

  forget(source: string): void { this.entries.delete(source); }
}

function median(xs: number[]): number {
  xs.sort((a, b) => a - b);
  const m = xs.length >> 1;
  return xs.length % 2 ? xs[m] : (xs[m - 1] + xs[m]) / 2;
}

export interface SessionsSeenOptions {
  /** A session counts while it was seen within this window. */
  windowMs?: number;
  /** A session counts once it came back this many times (a token fetched and never used is no person). */
  minRequests?: number;
  /** Sessions remembered per source at most (oldest forgotten). */
  maxPerSource?: number;
  maxSources?: number;
}

/**
 * Distinct sessions (valid challenge cookies, the site's session cookie) seen
 * from each source: what tells a NAT of many people from one client. Feeds
 * FairShare's sessionsBehind and the per-source caps (scaledCap).
 * Farming: a bot on one address can fetch many challenge cookies; only
 * sessions that came back minRequests times count, the count per source is
 * bounded (maxPerSource), and the fair share per session still applies — the
 * caller should also bound how fast one address is issued new tokens.
 * Memory: maxSources × maxPerSource entries at most. Pure: time is passed in.
 */
export class SessionsSeen {
  readonly opts: Required<SessionsSeenOptions>;
  private readonly sources = new Map<string, Map<string, { last: number; n: number; first: number }>>();

  constructor(options: SessionsSeenOptions = {}) {
    this.opts = { windowMs: 10 * 60_000, minRequests: 2, maxPerSource: 256, maxSources: 20_000, ...stripUndefined(options) };
  }

  get size(): number { return this.sources.size; }

  /** Whether any session of source is remembered. */
  has(source: string): boolean { return this.sources.has(source); }

  /** A request from source carrying session (an opaque id: the token, or a hash of the session cookie). Returns how
   *  many times the session was seen (minRequests: it just started to count). */
  record(now: number, source: string, session: string): number {
    let m = this.sources.get(source);
    if (m) this.sources.delete(source);
    else {
      if (this.sources.size >= this.opts.maxSources) this.sources.delete(this.sources.keys().next().value!);
      m = new Map();
    }
    this.sources.set(source, m);
    const e = m.get(session);
    if (e) { m.delete(session); e.last = now; e.n++; m.set(session, e); return e.n; }
    if (m.size >= this.opts.maxPerSource) {
      const victim = evictable(m, this.opts.minRequests, now);
      if (victim === null) return 1; // full of newcomers still due back: this one waits for a slot
      m.delete(victim);
    }
    m.set(session, { last: now, n: 1, first: now });
    return 1;
  }

  /** How long ago session was first seen from source (ms), or null when it is not remembered. */
  age(now: number, source: string, session: string): number | null {
    const e = this.sources.get(source)?.get(session);
    return e ? now - e.first : null;
  }

  /** Forget one session of source (it was replaced); true when it counted (the source's count may have dropped). */
  forget(source: string, session: string): boolean {
    const m = this.sources.get(source);
    const e = m?.get(session);
    if (!m || !e) return false;
    m.delete(session);
    return e.n >= this.opts.minRequests;
  }

  /** Sessions seen from source within the window that came back minRequests times; at least 1. */
  count(now: number, source: string): number {
    const m = this.sources.get(source);
    if (!m) return 1;
    let n = 0;
    for (const e of m.values()) if (now - e.last <= this.opts.windowMs && e.n >= this.opts.minRequests) n++;
    return Math.max(1, n);
  }
}

/** The session to forget from a full table: the least recently seen of the first few that never came back, once it
 *  had ADMIT_MS to come back; else, when none of those is a newcomer, the least recently seen; null: keep them all.
 *  With more people than slots, forgetting the oldest at once would drop each before its return and the count would
 *  collapse; instead newcomers wait for a slot while those admitted come back and count. */
const ADMIT_MS = 10_000;
function evictable(m: Map<string, { n: number; last: number }>, minRequests: number, now: number): string | null {
  let k = 0;
  for (const [session, e] of m) {
    if (e.n < minRequests) return now - e.last >= ADMIT_MS ? session : null;
    if (++k >= 16) break;
  }
  return m.keys().next().value!;
}

/** A per-source cap (connections, requests in flight, rate) raised for the sessions seen behind the address, up to maxFactor times. */
export function scaledCap(base: number, sessions: number, maxFactor = 64): number {
  return Math.round(base * Math.min(maxFactor, Math.max(1, sessions)));
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
