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
// those (a proxy started mid-attack), among every active source. While the
// origin is under pressure (saturated, with blips of calm shorter than the
// window counted in), it is the median among the incumbents: the sources that
// used the origin a few seconds before the pressure was seen, when there are
// enough of them active. What saturates an origin cannot be older than the
// saturation, so they are the measure of what a person asks of it; among the
// sources with history, a swarm of bots that outnumbers the people would be
// the typical source, and none of them would ever be over "its" share. People
// behind a NAT share one address; the caller says how many distinct sessions
// (valid challenge cookies, session cookies) it saw from an address
// (sessionsBehind), and the address's allowance is multiplied by that.
//
// A source's share is its pace, not only what it got: the time its requests
// spent held in our queue (waiting for the origin) is taken out of the window
// it is judged over. A bot that navigates without pausing but waits behind
// the people gets what the people leave, a modest amount next to a person's;
// over the time it was free to ask, it asked for many times what a person
// asks. A person made to wait is not inflated by it: its time free is its
// think time. Likewise a source seen for less than the window is judged over
// the time it has been seen: a share is a rate. The correction is bounded (a
// source free for less than a quarter of the window is judged over a quarter,
// so that a first page and its assets are not taken for a pace).
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
  /** Origin ms this source asked for in the window (used, at its pace when not held: see the header). */
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
  /** Per slot i of the ring: [i] the bucket number (time / bucketMs) it holds, [slots + i] the origin ms used in it,
   *  [2 × slots + i] the ms the source had a request held in the queue. One array: each typed array costs some 200
   *  bytes of its own besides its numbers, and a domain keeps thousands of these. */
  ring: Float64Array;
  /** Its requests held in the queue now, and since when one has been. */
  waiting: number;
  waitFrom: number;
  overSince: number | null;
}

/** An incumbent used the origin this long before the pressure was seen: the limit needs a few of its windows to see
 *  saturation, and the sources that came in the seconds before it are as likely to be its cause as not. */
const INCUMBENT_LEAD_MS = 3000;

/** The window a source is judged over shrinks by its time held in the queue, to this share of it at the least. */
const MIN_FREE_SHARE = 0.25;

const DEFAULTS = {
  windowMs: 20_000,
  bucketMs: 1000,
  maxSources: 50_000,
  overShareRatio: 4,
  historyMs: 10_000,
  minTypicalSources: 5,
  // Longer than the window: one burst of expensive requests (a person's three searches at once) stays in it that long.
  persistMs: 25_000,
  recomputeMs: 1000,
  maxSample: 2001,
};

export class FairShare {
  readonly opts: typeof DEFAULTS;
  private readonly slots: number;
  private readonly entries = new Map<string, Entry>();
  private sessionsBehind: (source: string) => number;
  private typicalCache: number | null = null;
  private typicalUseCache: number | null = null;
  private typicalAt = -Infinity;
  /** Whether the typical share was taken over sources judged by their rate (not over all active ones): a source is
   *  measured the same way as the sources it is compared with. */
  private typicalBySpan = true;
  /** When the current stretch of pressure began (0: none), and when its current calm blip began (0: saturated). */
  private pressureSince = 0;
  private calmSince = 0;

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

  /**
   * Whether the origin is saturated now (at every answer). A stretch of pressure starts at the first saturated
   * answer and ends after a window's worth of calm: the limit's verdict flips between windows under a steady attack,
   * and each flip must not make the attack's sources incumbents.
   */
  notePressure(now: number, saturated: boolean): void {
    if (saturated) {
      this.calmSince = 0;
      if (this.pressureSince === 0) { this.pressureSince = now; this.typicalAt = -Infinity; }
    } else if (this.pressureSince !== 0) {
      if (this.calmSince === 0) this.calmSince = now;
      else if (now - this.calmSince >= this.opts.windowMs) { this.pressureSince = this.calmSince = 0; this.typicalAt = -Infinity; }
    }
  }

  /** When the current stretch of pressure began; 0 when there is none. */
  get pressureStart(): number { return this.pressureSince; }

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
      const ring = new Float64Array(3 * this.slots);
      ring.fill(-1, 0, this.slots);
      e = { firstSeen: now, lastSeen: now, ring, waiting: 0, waitFrom: 0, overSince: null };
      this.entries.set(source, e);
    }
    // Not saturated: no time counts as over the share (what assess() would do, without its verdict object).
    if (calm) e.overSince = null;
    e.ring[this.slots + this.bucket(e, now)] += originMs;
  }

  /** The slot of the bucket of `now`, emptied when it held an older bucket. */
  private bucket(e: Entry, now: number): number {
    const b = Math.floor(now / this.opts.bucketMs);
    const i = b % this.slots;
    const r = e.ring, n = this.slots;
    if (r[i] !== b) { r[i] = b; r[n + i] = 0; r[2 * n + i] = 0; }
    return i;
  }

  /** A request of source starts waiting in the queue (a source that never used the origin is not tracked). */
  hold(now: number, source: string): void {
    const e = this.entries.get(source);
    if (e && e.waiting++ === 0) e.waitFrom = now;
  }

  /** A request of source stops waiting (its turn came, or it was refused or cancelled). */
  unhold(now: number, source: string): void {
    const e = this.entries.get(source);
    if (!e || e.waiting === 0) return;
    if (--e.waiting === 0) e.ring[2 * this.slots + this.bucket(e, now)] += now - e.waitFrom;
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
    const r = e.ring, n = this.slots;
    for (let i = 0; i < n; i++) if (r[i] > b - n && r[i] <= b) s += r[n + i];
    return s;
  }

  /** Origin ms used in the window, scaled to the whole window from the part of it the source was seen and not held (its pace). */
  private demand(e: Entry, now: number, bySpan = true): number {
    const b = Math.floor(now / this.opts.bucketMs);
    let used = 0, held = e.waiting > 0 ? now - e.waitFrom : 0;
    const r = e.ring, n = this.slots;
    for (let i = 0; i < n; i++) if (r[i] > b - n && r[i] <= b) { used += r[n + i]; held += r[2 * n + i]; }
    const w = this.opts.windowMs, span = bySpan ? Math.min(w, now - e.firstSeen) : w;
    if (used <= 0 || (held <= 0 && span >= w)) return used;
    return used * w / Math.max(MIN_FREE_SHARE * w, span - held);
  }

  /** What source asks of the origin (origin ms in the window at its pace when not held: see the header), measured as
   *  the sources of the typical share are. */
  demandOf(now: number, source: string): number {
    const e = this.entries.get(source);
    if (!e) return 0;
    this.typical(now);
    return this.demand(e, now, this.typicalBySpan);
  }

  private sessionsOf(source: string): number {
    const n = this.sessionsBehind(source);
    return Number.isFinite(n) && n >= 1 ? n : 1;
  }

  /**
   * The median origin ms per session over the incumbents under pressure (see the header), else over sources with
   * history, else over all active ones; null when too few are active.
   */
  typical(now: number): number | null {
    this.refresh(now);
    return this.typicalCache;
  }

  /**
   * What the same typical source used (origin ms in the window, per session), not scaled to its pace: the unit of
   * what a source spends, as the newcomers' slice counts it.
   */
  typicalUse(now: number): number | null {
    this.refresh(now);
    return this.typicalUseCache;
  }

  private refresh(now: number): void {
    if (now - this.typicalAt < this.opts.recomputeMs) return;
    this.typicalAt = now;
    // Per source: [its share at its pace, what it used].
    const incumbents: number[][] = [], withHistory: number[][] = [], all: number[][] = [];
    const since = this.pressureSince;
    const stride = Math.max(1, Math.ceil(this.entries.size / this.opts.maxSample));
    let k = 0;
    for (const [source, e] of this.entries) {
      if (k++ % stride !== 0) continue;
      if (now - e.lastSeen > this.opts.windowMs) continue;
      const used = this.sum(e, now);
      if (used <= 0) continue;
      const sessions = this.sessionsOf(source), pair = [this.demand(e, now) / sessions, used / sessions];
      // Among all active sources (a proxy started mid-attack: a rotating flood's sources live a second or two), a
      // share is what each used: judged by its rate, each would weigh as if it came back every few seconds.
      all.push([this.demand(e, now, false) / sessions, pair[1]]);
      if (now - e.firstSeen >= this.opts.historyMs) withHistory.push(pair);
      if (since > 0 && e.firstSeen < since - INCUMBENT_LEAD_MS) incumbents.push(pair);
    }
    const min = this.opts.minTypicalSources;
    const xs = incumbents.length >= min ? incumbents : withHistory.length >= min ? withHistory : all.length >= min ? all : [];
    this.typicalCache = xs.length ? median(xs.map((x) => x[0])) : null;
    this.typicalUseCache = xs.length ? median(xs.map((x) => x[1])) : null;
    this.typicalBySpan = xs !== all;
  }

  /** How source stands against the typical share; call it when deciding its rank (it also tracks persistence). */
  assess(now: number, source: string, saturated: boolean): ShareVerdict {
    const e = this.entries.get(source);
    const typicalMs = this.typical(now);
    const usedMs = e ? this.demand(e, now, this.typicalBySpan) : 0;
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
