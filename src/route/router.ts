// Host → domain. Pure: the table is built once per config and looked up per request.
import { isIPv6 } from 'node:net';
import type { DomainConfig } from '../config/schema.ts';

export type RouteTable = Map<string, DomainConfig>;

export function buildRouteTable(domains: DomainConfig[]): RouteTable {
  const t: RouteTable = new Map();
  for (const d of domains) for (const h of [d.name, ...d.aliases]) t.set(h.includes(':') ? ipLiteral(h) ?? h : h.replace(/\.$/, ''), d);
  return t;
}

/** An IPv6 address as a Host names it: in brackets, canonical (lower case, compressed), so that every spelling of
 *  one address finds the domain configured by any other; null when it is no IPv6 address. */
function ipLiteral(address: string): string | null {
  if (!isIPv6(address)) return null;
  try { return new URL(`http://[${address}]/`).hostname; } catch { return null; }
}

/** One spelling per configured host (the config's duplicate check): lower case, no trailing dot, an IPv6 address as
 *  the route table keys it. */
export function canonicalHost(h: string): string {
  const n = h.toLowerCase().replace(/\.$/, '');
  return ipLiteral(n) ?? n;
}

const HOST_CHARS = /^[a-z0-9._-]+$/;

/** The Host header's name part, lower-cased, port and trailing dot stripped; null when malformed. */
export function hostName(header: string | undefined): string | null {
  if (!header || header.length > 260) return null;
  let h = header.toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end < 0) return null;
    const rest = h.slice(end + 1);
    if (rest && !/^:\d{1,5}$/.test(rest)) return null;
    return ipLiteral(h.slice(1, end));
  }
  const colon = h.indexOf(':');
  if (colon >= 0) {
    if (!/^\d{1,5}$/.test(h.slice(colon + 1))) return null;
    h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h && HOST_CHARS.test(h) ? h : null;
}

export type RouteResult =
  | { ok: true; domain: DomainConfig; host: string }
  | { ok: false; status: 400 | 421; reason: 'bad-host' | 'unknown-host' };

export function route(table: RouteTable, header: string | undefined): RouteResult {
  const host = hostName(header);
  if (host === null) return { ok: false, status: 400, reason: 'bad-host' };
  const domain = table.get(host);
  return domain ? { ok: true, domain, host } : { ok: false, status: 421, reason: 'unknown-host' };
}
