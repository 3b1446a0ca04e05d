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
// Memory: two SessionsSeen tables of at most MAX_SOURCES sources × 128 (64)
// sessions (some 35 MB at worst, measured), and caches cleared past
// MAX_CACHED. Time is passed in, or read from the injected clock (behind).
import { SessionsSeen } from './sessions-seen.ts';
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
const MAX_SOURCES = 2000;
const NOTE_MS = 500;
/** A token first seen this recently is a fresh one (see replaced()). */
const REPLACED_MS = 2000;
/** Only the tail of a cookie value is kept: enough to tell random ids apart, bounded whatever the client sends (a JWT's tail is its signature). */
const VALUE_TAIL = 24;

export class SharedAddresses {
  private opts: SharedAddressOptions;
  private names: Set<string>;
  /** "name=" for each session cookie name. */
  private needles: string[];
  private readonly tokens: SessionsSeen;
  private readonly cookies: SessionsSeen;
  private readonly cache = new Map<string, { at: number; f: number }>();
  /** The sessions each source last showed, and when they were recorded: the same again within NOTE_MS is not recorded
   *  again (a page's assets carry the same cookies; recording each would cost more than the rest of detection). */
  private readonly last = new Map<string, { at: number; client: string | null; header: string | undefined }>();

  private readonly now: () => number;

  constructor(opts: SharedAddressOptions, now: () => number) {
    this.opts = opts;
    this.now = now;
    this.names = new Set(opts.sessionCookies);
    this.needles = [...this.names].map((c) => c + '=');
    // Memory: a client that sends a new made-up session value per request fills its source's table to maxPerSource; so
    // that the worst case stays some 35 MB, few sources are kept: the most recently active, which a NAT's address is
    // (a request every few milliseconds), while one person's is forgotten between clicks at no loss (it counts 1).
    const maxSources = Math.min(opts.maxSources ?? MAX_SOURCES, MAX_SOURCES);
    this.tokens = new SessionsSeen({ maxSources, maxPerSource: 128 });
    this.cookies = new SessionsSeen({ maxSources, maxPerSource: 64 });
  }

  /** Sources remembered (the larger of the two tables). */
  get sources(): number { return Math.max(this.tokens.size, this.cookies.size); }

  reconfigure(opts: SharedAddressOptions): void {
    this.opts = opts;
    this.names = new Set(opts.sessionCookies);
    this.needles = [...this.names].map((c) => c + '=');
    this.cache.clear();
  }

  /**
   * What a request from source showed: its challenge token's client id (verified by the caller), its Cookie header,
   * and the client id the previous request on the same connection carried.
   */
  note(now: number, source: string, clientId: string | null, cookieHeader: string | undefined, previousOnConnection: string | null = null): void {
    if (clientId === null && !cookieHeader) return;
    if (clientId !== null && previousOnConnection !== null && previousOnConnection !== clientId) this.replaced(now, source, previousOnConnection, clientId);
    const l = this.last.get(source);
    if (l !== undefined && now - l.at < NOTE_MS && l.client === clientId && l.header === cookieHeader) return;
    if (l !== undefined) { l.at = now; l.client = clientId; l.header = cookieHeader; }
    else { if (this.last.size >= MAX_CACHED) this.last.clear(); this.last.set(source, { at: now, client: clientId, header: cookieHeader }); }
    const cookie = cookieHeader && this.needles.length > 0 ? this.siteSession(cookieHeader) : null;
    // A session that just started to count makes the cached factor stale: people arriving together are counted at once.
    if (clientId !== null && this.tokens.record(now, source, clientId) === this.tokens.opts.minRequests) this.cache.delete(source);
    if (cookie !== null && this.cookies.record(now, source, cookie) === this.cookies.opts.minRequests) this.cache.delete(source);
  }

  /**
   * A connection that carried one token now carries another that is new (first seen within REPLACED_MS): the client
   * replaced its cookie, so the older token is no second person. One client opening many connections at once gets a
   * token on each (each first request is challenged), keeps the newest, and the older ones come back on the requests
   * already in flight: counted as people, they multiplied its allowances (a flood over 32 connections counted 3–18).
   * People behind a NAT keep one token per browser and connection. A forward proxy that shares its connections
   * between users can make one user's token look replaced by a newcomer's: that token counts again once it comes
   * back (minRequests), a transient undercount rather than a lasting one.
   */
  private replaced(now: number, source: string, older: string, newer: string): void {
    const age = this.tokens.age(now, source, newer);
    if (age !== null && age > REPLACED_MS) return;
    if (this.tokens.forget(source, older)) this.cache.delete(source);
  }

  /** The site's session cookie value (its tail) in a Cookie header, or null. One indexOf per configured name, no
   *  split of the header: this runs on every request that carries cookies. */
  private siteSession(header: string): string | null {
    for (let n = 0; n < this.needles.length; n++) {
      const needle = this.needles[n];
      let at = header.indexOf(needle);
      // "xsid=" is not "sid=": the name starts the header or follows "; " (or ";").
      while (at > 0 && header.charCodeAt(at - 1) !== 32 && header.charCodeAt(at - 1) !== 59) at = header.indexOf(needle, at + 1);
      if (at < 0) continue;
      const start = at + needle.length;
      let end = header.indexOf(';', start);
      if (end < 0) end = header.length;
      while (end > start && header.charCodeAt(end - 1) === 32) end--;
      if (end - start < 8) continue; // shorter is no random session id
      return n + ':' + header.slice(Math.max(start, end - VALUE_TAIL), end);
    }
    return null;
  }

  /** factor() now: what the per-source caps at the edge ask (connections, requests in flight). */
  behind(source: string): number { return this.factor(this.now(), source); }

  /** How many people the source's traffic looks like (≥ 1), within maxFactor. */
  factor(now: number, source: string): number {
    if (!this.tokens.has(source) && !this.cookies.has(source)) return 1; // most sources: no session ever seen
    const c = this.cache.get(source);
    if (c && now - c.at < CACHE_MS) return c.f;
    const t = this.tokens.count(now, source);
    const k = Math.min(this.cookies.count(now, source), this.opts.cookieMaxFactor);
    const f = Math.max(1, Math.min(this.opts.maxFactor, Math.max(t, k)));
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
export function busierThanOne(levels: ArrayLike<number>, rules: CompiledRules, people: number, line = 0.25): boolean {
  for (let r = 0; r < rules.count; r++) if (levels[r] >= line * rules.capacity[r] * scaleOf(rules, r, people)) return true;
  return false;
}
