// The PROXY protocol v2 header (haproxy.org/download/2.9/doc/proxy-protocol.txt
// §2.2): a passthrough upstream sees only the proxy's address on the TCP
// connection and no HTTP header can carry the client's, so it is sent first,
// in binary. Pure: addresses in, bytes out.
import net from 'node:net';
import ipaddr from 'ipaddr.js';

export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

export interface Endpoint { address: string; port: number }

const unmap = (a: string) => (a.startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a);

const ipv4Bytes = (a: string) => Buffer.from(ipaddr.IPv4.parse(a).toByteArray());
const ipv6Bytes = (a: string) => Buffer.from(ipaddr.IPv6.parse(a.includes('%') ? a.slice(0, a.indexOf('%')) : a).toByteArray());

/**
 * PROXY v2 header for a TCP connection from `source` to `destination` (the
 * proxy's listening address). Families that differ are both written as IPv6
 * (IPv4-mapped); an address that is not an IP gives the LOCAL command.
 */
export function proxyV2Header(source: Endpoint, destination: Endpoint): Buffer {
  const src = unmap(source.address);
  const dst = unmap(destination.address);
  const fs = net.isIP(src);
  const fd = net.isIP(dst);
  if (fs === 0 || fd === 0) {
    // LOCAL: the upstream uses the real connection's addresses.
    return Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  }
  const v4 = fs === 4 && fd === 4;
  const addr = v4
    ? Buffer.concat([ipv4Bytes(src), ipv4Bytes(dst)])
    : Buffer.concat([ipv6Bytes(fs === 4 ? `::ffff:${src}` : src), ipv6Bytes(fd === 4 ? `::ffff:${dst}` : dst)]);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(source.port, 0);
  ports.writeUInt16BE(destination.port, 2);
  const len = addr.length + 4;
  return Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x21, v4 ? 0x11 : 0x21, len >> 8, len & 0xff]), addr, ports]);
}
