// Distinct sessions seen behind each address, and the per-source caps they
// raise: what tells a NAT of many people from one client (see SessionsSeen).
// Split from fair-share.ts, which reads the count (FairShare's sessionsBehind).

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
