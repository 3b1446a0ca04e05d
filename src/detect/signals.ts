// Request and response features, computed on the request path without
// allocation: string hashes instead of copies, character scans instead of
// URL parsing. Pure functions.
import type { IncomingHttpHeaders } from 'node:http';

/** FNV-1a over s[from, to): a 32-bit fingerprint, cheap enough for every request. */
export function hashRange(s: string, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193); }
  return h >>> 0;
}

/** Fingerprints of the User-Agents seen lately: a handful of strings of ~100 characters come with nearly every request,
 *  and looking one up (the engine hashes it natively) costs a third of hashing it here again. Bounded: emptied when full. */
const uaHashes = new Map<string, number>();
const UA_HASHES_MAX = 512;
export function userAgentHash(ua: string): number {
  let h = uaHashes.get(ua);
  if (h === undefined) {
    h = hashRange(ua, 0, ua.length) || 1;
    if (uaHashes.size >= UA_HASHES_MAX) uaHashes.clear();
    uaHashes.set(ua, h);
  }
  return h;
}

/** Where the path ends (the '?' or the end). */
export function pathEnd(url: string): number {
  const q = url.indexOf('?');
  return q < 0 ? url.length : q;
}

/**
 * Fingerprint of the query's key names only ("?a=1&b=2" and "?a=9&b=7" match),
 * 0 without a query. Tools like HULK and GoldenEye invent new keys on every
 * request; people (and search boxes, and `?_=timestamp`) keep the same keys.
 */
export function queryKeysHash(url: string, q: number): number {
  if (q >= url.length) return 0;
  let h = 0x811c9dc5, inKey = true;
  for (let i = q + 1; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 38 /* & */) { inKey = true; h = Math.imul(h ^ 38, 0x01000193); continue; }
    if (c === 61 /* = */) { inKey = false; continue; }
    if (c === 35 /* # */) break;
    if (inKey) h = Math.imul(h ^ c, 0x01000193);
  }
  return (h >>> 0) || 1;
}

const ASSET_PATH = /\.(?:css|js|mjs|map|png|jpe?g|gif|webp|avif|svg|ico|bmp|woff2?|ttf|otf|eot|mp4|webm|mp3|ogg|wasm|txt)$/i;

/** A script's name before the end of a path: the rest is its PATH_INFO (/index.php/x.js runs index.php). */
const SCRIPT_SEGMENT = /\.(?:php\d?|phtml|aspx?|ashx|jsp|jspx|do|action|cgi|pl|py|rb)\//i;

/** Obviously an asset by its path (a browser loads these after a page). */
export function isAssetPath(url: string, end: number): boolean {
  // Only the last few characters matter; slicing a short tail keeps the regex cheap on long URLs.
  if (!ASSET_PATH.test(url.slice(Math.max(0, end - 8), end))) return false;
  // What the application runs, whatever the end says (an asset suffix is free to add: a flood that appends one must
  // not pass as cheap): ";params" (a servlet container drops them, /api/search;1.js is /api/search) and a script
  // before the end (PATH_INFO).
  const semi = url.indexOf(';');
  return (semi < 0 || semi >= end) && !SCRIPT_SEGMENT.test(url.slice(0, end));
}

/** Static by the response's Content-Type, not the file extension. */
export function isStaticType(ct: string | null): boolean {
  if (!ct) return false;
  return ct.startsWith('image/') || ct.startsWith('font/') || ct.startsWith('text/css') || ct.includes('javascript')
    || ct.startsWith('video/') || ct.startsWith('audio/') || ct.startsWith('application/wasm') || ct.startsWith('application/font');
}

export const isHtml = (ct: string | null): boolean => ct !== null && ct.startsWith('text/html');

/**
 * How odd the header profile is: 2 for a missing User-Agent or Accept (every
 * browser sends both), 1 for a missing Accept-Language (browsers send it, many
 * tools do not), 0 for a browser-like head.
 */
export function headerOddness(h: IncomingHttpHeaders): number {
  const ua = h['user-agent'];
  if (!ua || ua.length < 8 || h.accept === undefined) return 2;
  return h['accept-language'] === undefined ? 1 : 0;
}

/** Reads one cookie's value from a Cookie header without splitting it (null when absent). */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  let i = header.indexOf(name + '=');
  while (i >= 0) {
    if (i === 0 || header.charCodeAt(i - 1) === 32 || header.charCodeAt(i - 1) === 59) {
      const start = i + name.length + 1;
      const end = header.indexOf(';', start);
      return header.slice(start, end < 0 ? header.length : end).trim();
    }
    i = header.indexOf(name + '=', i + 1);
  }
  return null;
}
