// How many people stand behind one source address (a NAT: an office, a
// school, a carrier's pool): counted from the distinct sessions its requests
// carry, so that the per-source caps (connections, requests in flight) and
// the rules' allowances grow with it, and forty colleagues behind one address
// are not refused as if they were one client sending forty times as much.
//
// Two kinds of session, not trusted alike:
//   - our challenge token's client id (cookie.ts): signed, so it cannot be
//     made up; a bot can still fetch many (one round trip each), which is why
//     a session counts only once it came back (SessionsSeen.minRequests) and
//     the factor is bounded (maxFactor);
//   - the site's own session cookie (sid, PHPSESSID, ...; sessionCookies):
//     present before any attack, when no challenge was ever sent, but it
//     cannot be verified here — a flooder can make values up — so it raises
//     the factor to cookieMaxFactor at most.
// The two are not added (one person often has both): the factor is the larger.
// A single client with no cookies counts as 1, whatever it sends: a flood from
// one address meets the caps and rules exactly as before.
//
// Memory: two SessionsSeen tables of at most MAX_SOURCES sources × (2 ×
// factor) sessions (some 45 MB at worst with the defaults), and a cache of
// counts, cleared when it grows past MAX_CACHED. Time is passed in, or read from the injected clock (behind).
import { SessionsSeen } from './fair-share.ts';
import type { CompiledRules } from './rules.ts';
import { scaleOf } from './engine.ts';

export interface SharedAddressOptions {
  /** Cookie names whose values are taken as the site's sessions. */
  sessionCookies: readonly string[];
  /** Most a cap or allowance is multiplied by. */
  maxFactor: number;
  /** Most the site's (unverifiable) session cookies alone may multiply it by. */
  cookieMaxFactor: number;
  maxSources?: number;
}

/** Names common web frameworks give their session cookie. */
export const DEFAULT_SESSION_COOKIES = ['sid', 'session', 'sessionid', 'session_id', 'PHPSESSID', 'JSESSIONID', 'connect.sid', 'ASP.NET_SessionId', 'laravel_session', '_session_id'];

/** How long a counted factor is reused: counting walks up to maxPerSource sessions, and caps ask on every connection and request. */
const CACHE_MS = 1000;
const MAX_CACHED = 20_000;
const MAX_SOURCES = 5000;
/** Only the tail of a cookie value is kept: enough to tell random ids apart, bounded whatever the client sends (a JWT's tail is its signature). */
const VALUE_TAIL = 24;

export class SharedAddresses {
  private opts: SharedAddressOptions;
  private names: Set<string>;
  private readonly tokens: SessionsSeen;
  private readonly cookies: SessionsSeen;
  private readonly cache = new Map<string, { at: number; f: number }>();

  private readonly now: () => number;

  constructor(opts: SharedAddressOptions, now: () => number) {
    this.opts = opts;
    this.now = now;
    this.names = new Set(opts.sessionCookies);
    // Memory: a client that sends a new made-up session value per request fills its source's table to maxPerSource; so
    // that the worst case stays under 50 MB, few sources are kept (sessions matter for the NATs among them) and no
    // more sessions per source than the factor can use (entries seen once take slots too, hence twice as many).
    const maxSources = Math.min(opts.maxSources ?? MAX_SOURCES, MAX_SOURCES);
    this.tokens = new SessionsSeen({ maxSources, maxPerSource: Math.max(8, 2 * opts.maxFactor) });
    this.cookies = new SessionsSeen({ maxSources, maxPerSource: Math.max(8, 2 * opts.cookieMaxFactor) });
  }

  /** Sources remembered (the larger of the two tables). */
  get sources(): number { return Math.max(this.tokens.size, this.cookies.size); }

  reconfigure(opts: SharedAddressOptions): void {
    this.opts = opts;
    this.names = new Set(opts.sessionCookies);
    this.cache.clear();
  }

  /** What a request from source showed: its challenge token's client id (verified by the caller) and its Cookie header. */
  note(now: number, source: string, clientId: string | null, cookieHeader: string | undefined): void {
    // A session that just started to count makes the cached factor stale: people arriving together are counted at once.
    if (clientId !== null && this.tokens.record(now, source, clientId) === this.tokens.opts.minRequests) this.cache.delete(source);
    if (cookieHeader && this.names.size > 0) {
      const v = this.siteSession(cookieHeader);
      if (v !== null && this.cookies.record(now, source, v) === this.cookies.opts.minRequests) this.cache.delete(source);
    }
  }

  /** The site's session cookie value (its tail) in a Cookie header, or null. */
  private siteSession(header: string): string | null {
    let start = 0;
    while (start < header.length) {
      let end = header.indexOf(';', start);
      if (end < 0) end = header.length;
      const eq = header.indexOf('=', start);
      if (eq > start && eq < end) {
        const name = header.slice(start, eq).trim();
        if (this.names.has(name)) {
          const v = header.slice(eq + 1, end).trim();
          if (v.length >= 8) return name + '=' + v.slice(-VALUE_TAIL); // shorter is no random session id
        }
      }
      start = end + 1;
    }
    return null;
  }

  /** factor() now: what the per-source caps at the edge ask (connections, requests in flight). */
  behind(source: string): number { return this.factor(this.now(), source); }

  /** How many people the source's traffic looks like (≥ 1), within maxFactor. */
  factor(now: number, source: string): number {
    const c = this.cache.get(source);
    if (c && now - c.at < CACHE_MS) return c.f;
    const t = this.tokens.count(now, source);
    const k = Math.min(this.cookies.count(now, source), this.opts.cookieMaxFactor);
    const f = Math.max(1, Math.min(this.opts.maxFactor, Math.max(t, k)));
    if (f === 1) return f; // most sources: nothing worth caching (two map look-ups found nothing)
    if (this.cache.size >= MAX_CACHED) this.cache.clear();
    this.cache.set(source, { at: now, f });
    return f;
  }
}

/** The options from the config (filter.nat); typed by shape, since the config schema takes its defaults from here. */
export function sharedOptions(config: { filter: { maxSources: number; nat: { sessionCookies: string[]; maxFactor: number; cookieMaxFactor: number } } }): SharedAddressOptions {
  const n = config.filter.nat;
  return { sessionCookies: n.sessionCookies, maxFactor: n.maxFactor, cookieMaxFactor: n.cookieMaxFactor, maxSources: config.filter.maxSources };
}

/** Some bucket is a quarter full (as of the source's last request, for the people already counted): the address is
 *  busier than them, so a source with a history gets its people asked for a trust cookie each, and counted. */
export function busierThanOne(levels: readonly number[], rules: CompiledRules, people: number, line = 0.25): boolean {
  for (let r = 0; r < rules.count; r++) if (levels[r] >= line * rules.capacity[r] * scaleOf(rules, r, people)) return true;
  return false;
}
