// Per-connection facts (computed once at accept) and the per-source cap on
// concurrent connections.
import type net from 'node:net';
import { clientAddress } from '../upstream/headers.ts';
import { sourceKey } from './source.ts';

export interface ConnectionInfo { source: string; client: string; tls: boolean; requests: number }

const INFO = Symbol('scrubber.connection');
type Tagged = net.Socket & { [INFO]?: ConnectionInfo };

export function connectionInfo(socket: net.Socket): ConnectionInfo {
  const s = socket as Tagged;
  let info = s[INFO];
  if (!info) {
    const client = clientAddress(socket.remoteAddress);
    info = { source: sourceKey(client), client, tls: 'encrypted' in socket, requests: 0 };
    s[INFO] = info;
  }
  return info;
}

/** The TLS socket made from a raw one carries the raw one's facts (counted at accept, before the handshake). */
export function adoptConnectionInfo(tlsSocket: net.Socket, raw: net.Socket): ConnectionInfo {
  const info = connectionInfo(raw);
  info.tls = true;
  (tlsSocket as Tagged)[INFO] = info;
  return info;
}

/** Puts a connection's facts on another object standing for it (an HTTP/2 stream's socket facade). */
export function tagConnectionInfo<T extends object>(o: T, info: ConnectionInfo): T {
  (o as { [INFO]?: ConnectionInfo })[INFO] = info;
  return o;
}

/** Tracks open connections per source: refuses past the cap, and closes all of a source's connections at once when it is banned. */
export class SourceConnections {
  private open = new Map<string, Set<net.Socket>>();
  cap: number;
  constructor(cap: number) { this.cap = cap; }

  /** Registers the socket; false (and nothing registered) when its source is at the cap. */
  admit(socket: net.Socket, source: string): boolean {
    let set = this.open.get(source);
    if (this.cap > 0 && set && set.size >= this.cap) return false;
    if (!set) { set = new Set(); this.open.set(source, set); }
    set.add(socket);
    socket.once('close', () => {
      const cur = this.open.get(source);
      if (!cur) return;
      cur.delete(socket);
      if (cur.size === 0) this.open.delete(source);
    });
    return true;
  }

  /** Destroys every open connection of a source (a ban takes effect on them at once). */
  closeSource(source: string): number {
    const set = this.open.get(source);
    if (!set) return 0;
    for (const s of set) s.destroy();
    return set.size;
  }

  count(source: string): number { return this.open.get(source)?.size ?? 0; }
  get sources(): number { return this.open.size; }
}
