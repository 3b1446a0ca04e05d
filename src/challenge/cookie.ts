// The cookie challenge: a 302 to the same URL that sets a signed, expiring
// token bound to the source and the domain. Browsers come back with it; most
// flooding tools never keep cookies. No JavaScript is asked of anyone.
// Token: "<expiry seconds, base36>.<HMAC-SHA256(secret, source|domain|expiry), base64url, 128 bits>".
import { createHmac, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { RequestHead } from '../http/head.ts';
import type { Answer } from '../respond/reply.ts';
import type { Challenge } from './challenge.ts';
import { cookieValue } from '../detect/signals.ts';

const MAC_CHARS = 22;

// A KeyObject made once (createSecretKey, in the filter) spares createHmac importing the raw key bytes on every
// request of an untrusted source under attack; a Buffer is still accepted (tests, one-off checks).
function mac(secret: KeyObject | Buffer, source: string, domain: string, exp: string): string {
  return createHmac('sha256', secret).update(`${source}|${domain}|${exp}`).digest('base64url').slice(0, MAC_CHARS);
}

export function signToken(secret: KeyObject | Buffer, source: string, domain: string, expiresAtMs: number): string {
  const exp = Math.ceil(expiresAtMs / 1000).toString(36);
  return `${exp}.${mac(secret, source, domain, exp)}`;
}

/** Whether the token is ours, for this source and domain, and not expired. Pure (now passed in). */
export function verifyToken(secret: KeyObject | Buffer, token: string, source: string, domain: string, nowMs: number): boolean {
  const dot = token.indexOf('.');
  if (dot < 1 || token.length !== dot + 1 + MAC_CHARS) return false;
  const exp = token.slice(0, dot);
  const expMs = parseInt(exp, 36) * 1000;
  if (!Number.isFinite(expMs) || expMs <= nowMs) return false;
  const want = Buffer.from(mac(secret, source, domain, exp));
  const got = Buffer.from(token.slice(dot + 1));
  return got.length === want.length && timingSafeEqual(got, want);
}

/** The cookie challenge: passed by a request that brings back a valid token for its source and domain. */
export class CookieChallenge implements Challenge {
  readonly kind = 'cookie';
  private readonly secret: KeyObject;
  private cookieName: string;

  constructor(secret: KeyObject, cookieName: string) { this.secret = secret; this.cookieName = cookieName; }

  reconfigure(config: Config): void { this.cookieName = config.filter.challenge.cookieName; }

  passed(head: RequestHead, domain: string, now: number): boolean {
    const token = cookieValue(head.headers.cookie, this.cookieName);
    return token !== null && verifyToken(this.secret, token, head.source, domain, now);
  }

  /** Same URL again, with the cookie; marked as ours and never cached. */
  issue(head: RequestHead, domain: string, now: number, trustMs: number): Answer {
    const token = signToken(this.secret, head.source, domain, now + trustMs);
    const maxAge = Math.max(1, Math.ceil(trustMs / 1000));
    return {
      status: 302, reason: 'challenge', body: '',
      headers: { location: head.url, 'set-cookie': `${this.cookieName}=${token}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${head.tls ? '; Secure' : ''}` },
    };
  }
}
