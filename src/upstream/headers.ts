// Header rewriting, both ways, as pure functions over Node's flat rawHeaders
// arrays ([name, value, name, value, ...]), so duplicates and order survive.

// RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies still see.
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer',
  'upgrade', 'proxy-authenticate', 'proxy-authorization',
]);

export const VIA = '1.1 scrubber';

/**
 * Headers the proxy sets, frames by or routes by. A Connection header may name
 * any header as hop-by-hop (RFC 9110 §7.6.1), but honouring that for these
 * would let a client strip Host (the upstream then sees its own ip:port), its
 * X-Forwarded-For, or the framing: they are never removed through Connection.
 */
const PROTECTED = new Set([
  'host', 'content-length', 'transfer-encoding', 'x-forwarded-for', 'x-forwarded-proto',
  'x-forwarded-host', 'via', 'upgrade', 'connection',
]);

/**
 * Client → upstream only. The proxy answers `Expect: 100-continue` itself (the
 * flow sends the 100 when it reads the body: http/expect-continue.ts) and then sends
 * the whole body; undici refuses the header outright, so forwarding it failed
 * every such request with a 502.
 */
const REQUEST_ONLY_DROP = new Set(['expect']);

/**
 * Header names listed in Connection values ("close, X-Foo" → {"x-foo"}); null
 * when they name nothing beyond the hop-by-hop set, as nearly every request
 * and response does ("keep-alive", "close"), so the hot path allocates nothing.
 */
function connectionTokens(values: string[]): Set<string> | null {
  let s: Set<string> | null = null;
  for (const v of values) {
    const lv = v.toLowerCase();
    if (lv === 'keep-alive' || lv === 'close' || lv === 'upgrade') continue;
    for (const t of lv.split(',')) {
      const n = t.trim();
      if (n && !HOP_BY_HOP.has(n) && !PROTECTED.has(n)) (s ??= new Set()).add(n);
    }
  }
  return s;
}

/** IPv4-mapped IPv6 (::ffff:1.2.3.4) is written as plain IPv4. */
export function clientAddress(remote: string | undefined): string {
  if (!remote) return 'unknown';
  return remote.startsWith('::ffff:') && remote.includes('.') ? remote.slice(7) : remote;
}

export interface ForwardedInfo { client: string; proto: 'http' | 'https'; host: string }

/** Client → upstream: drop hop-by-hop, append X-Forwarded-For, set -Proto/-Host, add Via. */
export function toUpstreamHeaders(raw: string[], info: ForwardedInfo, keepUpgrade = false): string[] {
  const conn: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === 'connection') conn.push(raw[i + 1]);
  const named = connectionTokens(conn);
  const out: string[] = [];
  const xff: string[] = [];
  const via: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    if (lower === 'x-forwarded-for') { xff.push(raw[i + 1]); continue; }
    if (lower === 'via') { via.push(raw[i + 1]); continue; }
    if (lower === 'x-forwarded-proto' || lower === 'x-forwarded-host' || REQUEST_ONLY_DROP.has(lower)) continue;
    if (HOP_BY_HOP.has(lower) || (named !== null && named.has(lower))) {
      if (keepUpgrade && lower === 'upgrade') out.push(name, raw[i + 1]);
      continue;
    }
    out.push(name, raw[i + 1]);
  }
  xff.push(info.client);
  via.push(VIA);
  out.push('x-forwarded-for', xff.join(', '), 'x-forwarded-proto', info.proto, 'x-forwarded-host', info.host, 'via', via.join(', '));
  if (keepUpgrade) out.push('connection', 'upgrade');
  return out;
}

/**
 * Upstream → client: the same stripping on undici's header object; Via added.
 * An object, not a flat array: Node's writeHead takes an object as it is, while
 * an array goes through removeHeader/appendHeader for every line.
 */
export function toClientHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const conn = headers.connection;
  const named = conn === undefined ? null : connectionTokens(Array.isArray(conn) ? conn : [conn]);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || HOP_BY_HOP.has(name) || (named !== null && named.has(name))) continue;
    out[name] = v;
  }
  const via = out.via;
  out.via = via === undefined ? VIA : `${Array.isArray(via) ? via.join(', ') : via}, ${VIA}`;
  return out;
}

/**
 * Upstream → client for an answer relayed as raw lines (an upgrade's 101, or the answer of an upstream that declined
 * it): the same stripping on Node's rawHeaders, Via added. A 101 keeps its Upgrade and says `connection: upgrade`;
 * framing goes (the relay frames a declined answer's body itself: it closes after it).
 */
export function toClientRawHeaders(raw: string[], switching: boolean): string[] {
  const conn: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === 'connection') conn.push(raw[i + 1]);
  const named = connectionTokens(conn);
  const out: string[] = [];
  const via: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase();
    if (lower === 'via') via.push(raw[i + 1]);
    else if (switching && lower === 'upgrade') out.push(raw[i], raw[i + 1]);
    else if (!HOP_BY_HOP.has(lower) && lower !== 'content-length' && (named === null || !named.has(lower))) out.push(raw[i], raw[i + 1]);
  }
  via.push(VIA);
  out.push('via', via.join(', '));
  if (switching) out.push('connection', 'upgrade');
  return out;
}
