// Address parsing for the lists, and the whitelist. Whitelist entries are
// single addresses or CIDR ranges no broader than /16 (IPv4) or /48 (IPv6):
// a broader range would exempt whole networks an attacker can rent from.
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { sourceKey } from '../listen/source.ts';

export const MIN_PREFIX_V4 = 16;
export const MIN_PREFIX_V6 = 48;

const V4_MAPPED = ipaddr.IPv6.parse('::ffff:0:0');
const V4_COMPAT = ipaddr.IPv6.parse('::');

export interface ParsedRange { kind: 'ipv4' | 'ipv6'; network: string; prefix: number; text: string }

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/**
 * An IPv6 address written with a dotted tail in its all-hex form ("::1.2.3.4" → "::102:304"), anything else as is.
 * ipaddr.js reads any "::a.b.c.d" as the IPv4-mapped ::ffff:a.b.c.d, which took the IPv6 address ::102:304 for the
 * IPv4 host 1.2.3.4; the WHATWG URL parser reads it as RFC 4291 writes it. A zone id is kept aside. Pure.
 */
export function hexIPv6(address: string): string {
  if (!address.includes('.') || !net.isIPv6(address)) return address;
  const zone = address.indexOf('%');
  try {
    const hex = new URL(`http://[${zone < 0 ? address : address.slice(0, zone)}]/`).hostname.slice(1, -1);
    return zone < 0 ? hex : hex + address.slice(zone);
  } catch { return address; }
}

/** "10.1.2.3", "10.1.0.0/16", "2001:db8::/48" → a normalised range; broader than /16 or /48 is refused. Pure. */
export function parseWhitelistEntry(input: string): Parsed<ParsedRange> {
  const trimmed = input.trim(), slash = trimmed.indexOf('/');
  const text = slash < 0 ? hexIPv6(trimmed) : hexIPv6(trimmed.slice(0, slash)) + trimmed.slice(slash);
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  let prefix: number;
  try {
    if (text.includes('/')) [addr, prefix] = ipaddr.parseCIDR(text);
    else { addr = ipaddr.parse(text); prefix = addr.kind() === 'ipv4' ? 32 : 128; }
  } catch {
    return { ok: false, error: `${JSON.stringify(input)} is not an IP address or CIDR range` };
  }
  if (net.isIP(text.split('/')[0]) === 0) return { ok: false, error: `${JSON.stringify(input)} is not an IP address or CIDR range` };
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    addr = (addr as ipaddr.IPv6).toIPv4Address();
    prefix = Math.max(0, prefix - 96);
  }
  const kind = addr.kind();
  // net.BlockList matches IPv4 peers against IPv6 ranges over the IPv4-mapped space (::/80 held every IPv4
  // address): a range that takes in ::ffff:0:0/96 or the old IPv4-compatible ::/96 whole is refused.
  if (kind === 'ipv6' && prefix <= 96 && (V4_MAPPED.match(addr as ipaddr.IPv6, prefix) || V4_COMPAT.match(addr as ipaddr.IPv6, prefix))) {
    return { ok: false, error: `${text} covers the IPv4-mapped or IPv4-compatible IPv6 space: whitelist IPv4 addresses as IPv4` };
  }
  const min = kind === 'ipv4' ? MIN_PREFIX_V4 : MIN_PREFIX_V6;
  if (prefix < min) return { ok: false, error: `${text} is broader than /${min}: whitelist ranges must be /${min} or narrower (${kind === 'ipv4' ? 'IPv4' : 'IPv6'})` };
  const network = kind === 'ipv4'
    ? ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${prefix}`).toString()
    : ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${prefix}`).toString();
  const full = kind === 'ipv4' ? 32 : 128;
  return { ok: true, value: { kind, network, prefix, text: prefix === full ? network : `${network}/${prefix}` } };
}

/**
 * An address for the blacklist → the source key it bans: IPv4 as is, IPv6
 * aggregated per /64 (as the edge attributes it). Accepts "2001:db8::/64" too.
 */
export function parseBlacklistAddress(input: string): Parsed<string> {
  const text = input.trim();
  const bad = { ok: false as const, error: `${JSON.stringify(input)} is not an IP address` };
  if (text.includes('/')) {
    // Exactly address/prefix: "2001:db8::/64/junk" is not an address with a tail to ignore.
    const parts = text.split('/');
    if (parts.length !== 2 || !net.isIP(parts[0])) return { ok: false, error: `${JSON.stringify(input)} is not an IP address or an IPv6 /64` };
    if (parts[1] !== '64' || !net.isIPv6(parts[0])) return { ok: false, error: `${JSON.stringify(input)}: only single addresses (IPv6: a /64) can be blacklisted` };
    // Normalised first, as a single address is: "::FFFF:1.2.3.4/64" names the IPv4 client, not the IPv6 source ::/64.
    return { ok: true, value: sourceKey(ipaddr.process(hexIPv6(parts[0])).toString()) };
  }
  if (!net.isIP(text)) return bad;
  return { ok: true, value: sourceKey(ipaddr.process(hexIPv6(text)).toString()) };
}

/** Splits a source key into what net.BlockList takes. */
export function blockTarget(source: string): { address: string; prefix: number; type: 'ipv4' | 'ipv6' } | null {
  if (source.endsWith('/64')) return { address: source.slice(0, -3), prefix: 64, type: 'ipv6' };
  const t = net.isIP(source);
  if (t === 4) return { address: source, prefix: 32, type: 'ipv4' };
  if (t === 6) return { address: source, prefix: 128, type: 'ipv6' };
  return null;
}

export interface WhitelistEntry { ip: string; origin: 'config' | 'api'; note: string; since: number }

/**
 * The whitelist: entries from the config and from the API, matched through one net.BlockList per family, so that
 * an address is only ever tested against ranges of its own family (a BlockList matches IPv4 against IPv6 ranges).
 */
export class Whitelist {
  private entries = new Map<string, WhitelistEntry & { range: ParsedRange }>();
  private lists = { ipv4: new net.BlockList(), ipv6: new net.BlockList() };
  /** IPv6 entries narrower than a /64, by the /64 source they fall in (an IPv6 source is a whole /64). */
  private narrowV6 = new Set<string>();
  /** The config's entries as last set, also those an API entry of the same range stands in for (see remove). */
  private config = new Map<string, WhitelistEntry & { range: ParsedRange }>();
  /** Bumped on every change: sources cache their verdict per version. */
  version = 0;

  /** Replaces the config part (on start and reload); API entries stay. */
  setConfigEntries(items: string[], now: number): void {
    for (const [k, e] of this.entries) if (e.origin === 'config') this.entries.delete(k);
    this.config.clear();
    for (const it of items) {
      const p = parseWhitelistEntry(it);
      if (!p.ok || this.config.has(p.value.text)) continue;
      const e = { ip: p.value.text, origin: 'config' as const, note: '', since: now, range: p.value };
      this.config.set(e.ip, e);
      if (!this.entries.has(e.ip)) this.entries.set(e.ip, e);
    }
    this.rebuild();
  }

  /** The entry as it is listed (its parsed range stays inside). */
  add(range: ParsedRange, origin: 'config' | 'api', note: string, since: number): WhitelistEntry {
    return this.addAll([{ range, note, since }], origin)[0];
  }

  /** Several entries with one rebuild: one rebuild each made reading in n entries (a start, a join) cost n². */
  addAll(items: { range: ParsedRange; note: string; since: number }[], origin: 'config' | 'api'): WhitelistEntry[] {
    for (const { range, note, since } of items) this.entries.set(range.text, { ip: range.text, origin, note, since, range });
    if (items.length) this.rebuild();
    return items.map(({ range, note, since }) => ({ ip: range.text, origin, note, since }));
  }

  get(text: string): WhitelistEntry | undefined { return this.entries.get(text); }

  /** An API entry the config lists too gives way to the config's: the range stays whitelisted, as the config says. */
  remove(text: string): boolean {
    const ok = this.entries.delete(text);
    const kept = this.config.get(text);
    if (ok && kept) this.entries.set(text, kept);
    if (ok) this.rebuild();
    return ok;
  }

  all(): WhitelistEntry[] {
    return [...this.entries.values()].map(({ ip, origin, note, since }) => ({ ip, origin, note, since }));
  }

  private rebuild(): void {
    const lists = { ipv4: new net.BlockList(), ipv6: new net.BlockList() };
    const narrow = new Set<string>();
    for (const { range } of this.entries.values()) {
      lists[range.kind].addSubnet(range.network, range.prefix, range.kind);
      if (range.kind === 'ipv6' && range.prefix > 64) narrow.add(sourceKey(range.network));
    }
    this.lists = lists;
    this.narrowV6 = narrow;
    this.version++;
  }

  /** Whether an entry the nodes share (made through the API, here or on another node) covers the source; one from this
   *  node's config alone does not. Builds a list each call: only for the rare ban that meets a whitelisted address. */
  coversShared(source: string): boolean {
    const shared = new Whitelist();
    shared.addAll([...this.entries.values()].filter((e) => e.origin === 'api'), 'api');
    return shared.covers(source);
  }

  /** Whether a source (an IPv4 address or an IPv6 /64) is covered. Not O(1): callers cache it per version. */
  covers(source: string): boolean {
    const t = blockTarget(source);
    if (!t) return false;
    if (this.lists[t.type].check(t.address, t.type)) return true;
    return t.prefix === 64 && this.narrowV6.has(source);
  }
}
