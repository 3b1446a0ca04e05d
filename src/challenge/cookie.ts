// The cookie challenge: a 302 to the same URL that sets a signed, expiring
// token bound to the source and the domain. Browsers come back with it; most
// flooding tools never keep cookies. No JavaScript is asked of anyone.
// Token: "<expiry seconds, base36>.<HMAC-SHA256(secret, source|domain|expiry), base64url, 128 bits>".
import { createHmac, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { ServerResponse } from 'node:http';

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

/** Sends the challenge: same URL again, with the cookie; marked as ours and never cached. */
export function sendChallenge(res: ServerResponse, url: string, cookieName: string, token: string, maxAgeSeconds: number, secure: boolean): void {
  res.writeHead(302, {
    location: url,
    'set-cookie': `${cookieName}=${token}; Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`,
    'x-scrubber': 'challenge',
    'cache-control': 'no-store',
    'content-length': 0,
  });
  res.end();
}
