// A request's source is the TCP peer, never a header. IPv6 peers are
// aggregated per /64 (one subscriber usually holds a whole /64); IPv4-mapped
// IPv6 is the IPv4 address.
import ipaddr from 'ipaddr.js';

export function sourceKey(remote: string | undefined): string {
  if (!remote) return 'unknown';
  if (!remote.includes(':')) return remote;
  if (remote.startsWith('::ffff:') && remote.includes('.')) return remote.slice(7);
  try {
    const p = ipaddr.IPv6.parse(remote).parts;
    return prefix64Key(p[0] * 0x10000 + p[1], p[2] * 0x10000 + p[3]);
  } catch {
    return remote;
  }
}

/** The key of the /64 whose first 64 bits are the two unsigned 32-bit words `hi` and `lo` (canonical text, "/64"). */
export function prefix64Key(hi: number, lo: number): string {
  const groups = [hi >>> 16, hi & 0xffff, lo >>> 16, lo & 0xffff, 0, 0, 0, 0];
  return `${new ipaddr.IPv6(groups).toString()}/64`;
}

/**
 * The two words of a /64 key exactly as sourceKey() writes it, or null for any other string (another spelling of
 * the same network included): the source table keeps such keys as numbers, and must give back the same text.
 */
export function prefix64Words(key: string): [hi: number, lo: number] | null {
  // sourceKey's /64s always end in "::": the last four groups are zero.
  if (!key.endsWith('::/64')) return null;
  let p: number[];
  try { p = ipaddr.IPv6.parse(key.slice(0, -3)).parts; } catch { return null; }
  if (p[4] !== 0 || p[5] !== 0 || p[6] !== 0 || p[7] !== 0) return null;
  const hi = p[0] * 0x10000 + p[1], lo = p[2] * 0x10000 + p[3];
  return prefix64Key(hi, lo) === key ? [hi, lo] : null;
}

/** A canonical dotted quad as an unsigned 32-bit number, or -1 (anything else, including "010.0.0.1"). */
export function ipv4(s: string): number {
  const n = s.length;
  if (n < 7 || n > 15) return -1;
  let v = 0, part = 0, digits = 0, dots = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c === -2) {
      if (digits === 0 || dots === 3) return -1;
      v = v * 256 + part; part = 0; digits = 0; dots++;
      continue;
    }
    if (c < 0 || c > 9 || (digits === 1 && part === 0)) return -1;
    part = part * 10 + c;
    if (++digits > 3 || part > 255) return -1;
  }
  return dots === 3 && digits > 0 ? v * 256 + part : -1;
}
