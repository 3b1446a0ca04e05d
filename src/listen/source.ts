// A request's source is the TCP peer, never a header. IPv6 peers are
// aggregated per /64 (one subscriber usually holds a whole /64); IPv4-mapped
// IPv6 is the IPv4 address.
import ipaddr from 'ipaddr.js';

export function sourceKey(remote: string | undefined): string {
  if (!remote) return 'unknown';
  if (!remote.includes(':')) return remote;
  if (remote.startsWith('::ffff:') && remote.includes('.')) return remote.slice(7);
  try {
    const parts = (ipaddr.IPv6.parse(remote)).parts.slice(0, 4);
    return `${ipaddr.IPv6.parse(parts.map((p) => p.toString(16)).join(':') + '::').toString()}/64`;
  } catch {
    return remote;
  }
}
