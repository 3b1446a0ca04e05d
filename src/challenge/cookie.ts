// The cookie challenge: a 302 to the same URL that sets a signed, expiring
// token. Browsers come back with it; most flooding tools never keep cookies.
// No JavaScript is asked of anyone.
//
// Token: "<expiry seconds, base36>.<client id, 64 random bits, base64url>.<HMAC-SHA256(secret, domain|id|expiry), 128 bits>".
//
// What the token is bound to, and why. Not to the address: a client behind a
// carrier NAT pool changes address between connections, a phone moves from
// Wi-Fi to the mobile network, and a dual-stack browser switches between IPv4
// and IPv6 (happy eyeballs) — binding to the exact address, or to a /24 or a
// /16, would challenge every one of those again, and no prefix covers IPv4
// and IPv6 together. Not to the User-Agent either: it costs nothing to copy,
// so it would add no protection, only spurious re-challenges when a browser
// updates. The token is bound to the domain and carries its own client id and
// expiry, all under the HMAC, so it cannot be forged or extended.
// What stops a token copied to a botnet is its spread (TokenSpread below):
// one client uses a token from a few networks; a token seen from more than
// maxNetworks distinct networks (IPv4 /24, IPv6 /48) is no longer honoured,
// anywhere, until it expires. The client id also tells people behind one
// NAT address apart (SessionsSeen, fair-share.ts).
import { createHmac, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { RequestHead } from '../http/head.ts';
import type { Answer } from '../respond/reply.ts';
import type { Challenge } from './challenge.ts';
import { cookieValue } from '../detect/signals.ts';

const MAC_CHARS = 22;
const ID_CHARS = 11;
const ID = /^[A-Za-z0-9_-]{11}$/;
const MAX_VERIFIED = 50_000;
/** How stale a token's place in the recency order may get (TokenSpread.use). */
const REORDER_MS = 1000;
/** The page (pages folder, or built in) for a browser that came back without the cookie, and its Retry-After (s). */
const COOKIES_NEEDED_PAGE = 'cookies-needed';
const COOKIES_RETRY_AFTER_S = 30;

// A KeyObject made once (createSecretKey, in the filter) spares createHmac importing the raw key bytes on every
// request of an untrusted source under attack; a Buffer is still accepted (tests, one-off checks).
function mac(secret: KeyObject | Buffer, domain: string, id: string, exp: string): string {
  return createHmac('sha256', secret).update(`${domain}|${id}|${exp}`).digest('base64url').slice(0, MAC_CHARS);
}

/** A new client id: 64 random bits. */
export function newClientId(): string { return randomBytes(8).toString('base64url'); }

export function signToken(secret: KeyObject | Buffer, id: string, domain: string, expiresAtMs: number): string {
  const exp = Math.ceil(expiresAtMs / 1000).toString(36);
  return `${exp}.${id}.${mac(secret, domain, id, exp)}`;
}

/** The token's client id when it is ours, for this domain and not expired; else null. Pure (now passed in). */
export function verifyToken(secret: KeyObject | Buffer, token: string, domain: string, nowMs: number): string | null {
  const a = token.indexOf('.');
  const b = a < 0 ? -1 : token.indexOf('.', a + 1);
  if (a < 1 || b !== a + 1 + ID_CHARS || token.length !== b + 1 + MAC_CHARS) return null;
  const exp = token.slice(0, a), id = token.slice(a + 1, b);
  if (!ID.test(id)) return null;
  const expMs = parseInt(exp, 36) * 1000;
  if (!Number.isFinite(expMs) || expMs <= nowMs) return null;
  const want = Buffer.from(mac(secret, domain, id, exp));
  const got = Buffer.from(token.slice(b + 1));
  return got.length === want.length && timingSafeEqual(got, want) ? id : null;
}

/** The network an address belongs to for the spread of a token: IPv4 /24, IPv6 /48 (sources are IPv4 or "v6prefix/64"). */
export function networkOf(source: string): string {
  if (!source.includes(':')) { const i = source.lastIndexOf('.'); return i < 0 ? source : source.slice(0, i); }
  // The source key of an IPv6 peer is its /64 in canonical form; the first three groups make the /48.
  const groups = source.replace(/\/\d+$/, '').split(':');
  const head: string[] = [];
  for (const g of groups) { if (g === '' || head.length === 3) break; head.push(g); }
  while (head.length < 3) head.push('0');
  return head.join(':') + '::/48';
}

export interface TokenSpreadOptions {
  /** Distinct networks (IPv4 /24, IPv6 /48) a token may be used from; beyond, it is refused everywhere. */
  maxNetworks: number;
  /** Tokens remembered at most (least recently used forgotten first). */
  maxTokens: number;
}

/** A token's networks so far (`last`: the address it came from last), and whether it was found over-shared. */
interface SpreadEntry { nets: string[]; revoked: boolean; at: number; last: string }

/**
 * Where each honoured token was used from, to stop a token copied to many
 * machines: one client moves between a few networks (home, phone, IPv4 and
 * IPv6); a token seen from more than maxNetworks of them has been shared, and
 * is refused from then on (until it expires, the entry stays marked).
 * Memory: maxTokens entries of at most maxNetworks + 1 short strings. Pure.
 */
export class TokenSpread {
  opts: TokenSpreadOptions;
  private readonly tokens = new Map<string, SpreadEntry>();
  /** Tokens refused for their spread (a counter for the operator). */
  revoked = 0;
  /** A worker of several: told each network a token is first seen from here. A copied token's networks may land on
   *  different workers (a source belongs to one), so its primary counts them for the node (useNetwork) and tells
   *  every worker to revoke it (revoke). */
  onNetwork: ((id: string, net: string) => void) | null = null;

  constructor(opts: TokenSpreadOptions) { this.opts = opts; }

  /** The token of client id was presented from source: false when it has been used from too many networks. */
  use(id: string, source: string, now = 0): boolean {
    const e = this.entry(id, now);
    if (e.revoked) return false;
    if (source === e.last) return true; // the address it came from last time: its network is already counted
    e.last = source;
    const net = networkOf(source);
    if (e.nets.includes(net)) return true;
    this.onNetwork?.(id, net);
    return this.add(e, net);
  }

  /** The primary: a worker saw the token from `net` first. False when the token is (now) used from too many. */
  useNetwork(id: string, net: string, now = 0): boolean {
    const e = this.entry(id, now);
    if (e.revoked) return false;
    return e.nets.includes(net) || this.add(e, net);
  }

  /** The primary: whether this network of the token is already counted here (or the token refused): no news for Redis. */
  counted(id: string, net: string): boolean { const e = this.tokens.get(id); return e !== undefined && (e.revoked || e.nets.includes(net)); }

  /** A worker: the node found the token over-shared; refused here from now on (counted where it was found). */
  revoke(id: string, now = 0): void {
    const e = this.entry(id, now);
    e.revoked = true;
    e.nets = [];
  }

  private entry(id: string, now: number): SpreadEntry {
    let e = this.tokens.get(id);
    if (e) {
      // Re-inserted last (the Map's order is recency) at most once a second: a browser sends its token with every
      // asset, and a delete and a set per request cost more than the rest of the check.
      if (now - e.at >= REORDER_MS) { this.tokens.delete(id); this.tokens.set(id, e); e.at = now; }
    } else {
      if (this.tokens.size >= this.opts.maxTokens) this.tokens.delete(this.tokens.keys().next().value!);
      e = { nets: [], revoked: false, at: now, last: '' };
      this.tokens.set(id, e);
    }
    return e;
  }

  private add(e: SpreadEntry, net: string): boolean {
    e.nets.push(net);
    if (e.nets.length <= this.opts.maxNetworks) return true;
    e.revoked = true;
    e.nets = [];
    this.revoked++;
    return false;
  }

  /** The tokens found over-shared, as long as they are remembered (a worker started later is told them). */
  revokedIds(): string[] { return [...this.tokens].filter(([, e]) => e.revoked).map(([id]) => id); }

  get size(): number { return this.tokens.size; }
}

/** The cookie challenge: passed by a request that brings back a valid, not over-shared token for its domain. */
export class CookieChallenge implements Challenge {
  readonly kind = 'cookie';
  private secret: KeyObject;
  /** The secret replaced by setSecret, still honoured until `previousUntil` (then forgotten, with what it verified). */
  private previous: KeyObject | null = null;
  private previousUntil = 0;
  private cookieName: string;
  /** The name over HTTPS. A browser that holds a Secure cookie refuses a non-Secure one of the same name set over
   *  HTTP (RFC 6265bis §5.7): one name for both would loop every http:// page of a visitor who passed over HTTPS. */
  private secureName: string;
  readonly spread: TokenSpread;
  /** Tokens already verified (token → client id): a trusted browser sends its cookie with every asset, and an HMAC
   *  per request would cost more than the look-up. Bounded: emptied when full. */
  private readonly verified = new Map<string, { domain: string; id: string; expiresAt: number }>();

  constructor(secret: KeyObject, cookieName: string, spread: TokenSpreadOptions = { maxNetworks: 4, maxTokens: 100_000 }) {
    this.secret = secret;
    this.cookieName = cookieName;
    this.secureName = `__Secure-${cookieName}`;
    this.spread = new TokenSpread(spread);
  }

  reconfigure(config: Config): void {
    const c = config.filter.challenge;
    this.cookieName = c.cookieName;
    this.secureName = `__Secure-${c.cookieName}`;
    this.spread.opts = { ...this.spread.opts, maxNetworks: c.maxNetworksPerToken };
  }

  /** A new secret (the nodes' shared one, adopted once Redis was reached): tokens are signed with it from now on;
   *  those signed with the one in use until now still pass for `graceMs` (the longest a token issued before can
   *  live), so that nobody who passed here is challenged again for the change. */
  setSecret(secret: KeyObject, now: number, graceMs: number): void {
    if (secret.equals(this.secret)) return;
    // A second change within the grace: the secret before the previous one is out, and what it verified with it.
    if (this.previous !== null) this.verified.clear();
    this.previous = this.secret;
    this.previousUntil = now + graceMs;
    this.secret = secret;
  }

  /** The client id of the request's token when it is valid for the domain and honoured from this source; else null. */
  client(head: RequestHead, domain: string, now: number): string | null {
    // Over HTTPS the plain name counts too: a token earned over HTTP is as good (it is bound to the domain only).
    const cookie = head.headers.cookie;
    const token = (head.tls ? cookieValue(cookie, this.secureName) : null) ?? cookieValue(cookie, this.cookieName);
    if (token === null) return null;
    // Past the changeover: what only the old secret verified must not stay honoured through the cache.
    if (this.previous !== null && now >= this.previousUntil) { this.previous = null; this.verified.clear(); }
    // Keyed by the token alone (a token is valid for its domain only: a hit for another domain is verified, and fails):
    // a key built per request would be a new string to hash on every request.
    const v = this.verified.get(token);
    let id: string | null;
    if (v === undefined || v.domain !== domain) {
      id = verifyToken(this.secret, token, domain, now) ?? (this.previous && verifyToken(this.previous, token, domain, now));
      if (id !== null) {
        if (this.verified.size >= MAX_VERIFIED) this.verified.clear();
        // A copy as the key: the token is a cut of the Cookie header, which in V8 keeps the whole header (up to
        // maxHeaderBytes) alive for as long as the entry lives. Once per token, after an HMAC: the copy costs nothing.
        this.verified.set(Buffer.from(token, 'latin1').toString('latin1'), { domain, id, expiresAt: parseInt(token, 36) * 1000 }); // expiry: the first field
      }
    } else if (v.expiresAt <= now) { this.verified.delete(token); return null; }
    else id = v.id;
    return id !== null && this.spread.use(id, head.source, now) ? id : null;
  }

  passed(head: RequestHead, domain: string, now: number): boolean { return this.client(head, domain, now) !== null; }

  /** Same URL again, with the cookie; marked as ours and never cached. `again` (it keeps coming back without it:
   *  challenge/cookieless.ts): a page saying cookies are needed, with a link to try again, instead of a redirect loop the
   *  browser ends with an error of its own; 503 with Retry-After, what a crawler that keeps no cookies reads as "come
   *  back later". It still sets a cookie: a browser that does keep it (a lost cookie) passes with the link. */
  issue(head: RequestHead, domain: string, now: number, trustMs: number, again = false): Answer {
    const token = signToken(this.secret, newClientId(), domain, now + trustMs);
    const maxAge = Math.max(1, Math.ceil(trustMs / 1000));
    const cookie = `${head.tls ? this.secureName : this.cookieName}=${token}; Path=/; Max-Age=${maxAge}; HttpOnly; ${head.tls ? 'SameSite=None; Secure' : 'SameSite=Lax'}`;
    if (again) return { status: 503, reason: 'challenge', page: COOKIES_NEEDED_PAGE, headers: { 'set-cookie': cookie, 'retry-after': COOKIES_RETRY_AFTER_S } };
    // A target whose path starts with "//" (or "/\", the same to a browser) would, as a Location, name another host
    // (a link to https://site//evil.example/ would send the visitor there): "/." keeps it a path on this host, and
    // the browser's dot-segment removal brings it back to the very same URL.
    const url = head.url, c = url.charCodeAt(1);
    // Over HTTPS SameSite=None: a page of the site inside another site's frame (a widget, an embed, a 3-D Secure
    // frame) is a cross-site response the browser stores no Lax cookie from, and it looped on 302s. The cookie grants
    // nothing to the application (it only lets the request through the filter), so sending it cross-site opens no
    // forgery; None needs Secure, so plain HTTP keeps Lax.
    // 307 for anything but GET and HEAD: a browser follows a 302 to a POST with a GET without its body (the Fetch
    // standard), so a challenged save reached the origin as a GET and was lost; a 307 is repeated as it was sent.
    return {
      status: head.method === 'GET' || head.method === 'HEAD' ? 302 : 307, reason: 'challenge', body: '',
      headers: { location: c === 47 || c === 92 ? '/.' + url : url, 'set-cookie': cookie },
    };
  }
}
