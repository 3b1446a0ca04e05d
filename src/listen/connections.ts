// Per-connection facts (computed once at accept) and the per-source cap on
// concurrent connections.
//
// The cap is per source address, and one address can be many people (a NAT):
// it is raised by the number of people the address's traffic shows (scale,
// SharedAddresses), and when it is reached the source's idle keep-alive
// connections are closed first, longest idle first, before a new one is
// refused. A browser keeps up to six connections per host open after a page
// has loaded and reopens one at no cost when it needs it; forty people behind
// one address would otherwise fill the cap with connections nobody uses.
// A flooder's connections are busy, so they are not idle, and it still meets
// the cap.
import type net from 'node:net';
import { clientAddress } from '../upstream/headers.ts';
import { sourceKey } from './source.ts';
import { scaledCap } from '../detect/sessions-seen.ts';
import type { ChallengeMark } from '../challenge/cookieless.ts';

export interface ConnectionInfo {
  source: string; client: string; tls: boolean; requests: number;
  /** Requests (HTTP/2: streams) being answered on it now: counted in by headOf, out when the flow observes the answer. */
  active: number;
  /** When its last request ended (performance.now()). */
  idleSince: number;
  /** HTTP/1.1 requests pipelined behind the one being answered, waiting for their turn (pipeline.ts). */
  pipelined: number;
  /** The challenge client id its last request carried (detection reads and sets it: a replaced cookie). */
  clientId: string | null;
  /** The last challenge answered on it (detection): the same one again and again without the cookie is a client that
   *  does not keep it (challenge/cookieless.ts). */
  challenged: ChallengeMark | null;
  /** The TLS socket over this raw one, where what waits for the client is held (the raw one shows none of it). */
  wire?: net.Socket;
}

const INFO = Symbol('scrubber.connection');
type Tagged = net.Socket & { [INFO]?: ConnectionInfo };

export function connectionInfo(socket: net.Socket): ConnectionInfo {
  const s = socket as Tagged;
  let info = s[INFO];
  if (!info) {
    const client = clientAddress(socket.remoteAddress);
    info = { source: sourceKey(client), client, tls: 'encrypted' in socket, requests: 0, active: 0, idleSince: 0, pipelined: 0, clientId: null, challenged: null };
    s[INFO] = info;
  }
  return info;
}

/** The TLS socket made from a raw one carries the raw one's facts (counted at accept, before the handshake). */
export function adoptConnectionInfo(tlsSocket: net.Socket, raw: net.Socket): ConnectionInfo {
  const info = connectionInfo(raw);
  info.tls = true;
  info.wire = tlsSocket;
  (tlsSocket as Tagged)[INFO] = info;
  return info;
}

/** Puts a connection's facts on another object standing for it (an HTTP/2 stream's socket facade). */
export function tagConnectionInfo<T extends object>(o: T, info: ConnectionInfo): T {
  (o as { [INFO]?: ConnectionInfo })[INFO] = info;
  return o;
}

/** A request on the connection was answered (once per request: headOf counted it in). */
export function requestEnded(info: ConnectionInfo, now: number): void {
  if (info.active > 0) info.active--;
  info.idleSince = now;
}

/** Idle: has served a request (a brand-new connection is about to send one), is answering none now, and has nothing
 *  left to send: a response is observed once its upstream part is over, while up to the read-ahead of it may still
 *  wait here for a slow client (closed then, the download was cut). What the kernel holds is still sent after a close. */
const idle = (s: net.Socket) => { const i = (s as Tagged)[INFO]; return i !== undefined && i.requests > 0 && !s.destroyed && quiet(s, i); };
/** Nothing answered on it now, nothing pipelined, nothing of an answer left to send. */
const quiet = (s: net.Socket, i: ConnectionInfo) => i.active === 0 && i.pipelined === 0 && (i.wire ?? s).writableLength === 0;

/** A connection's 'end' (the client's FIN) while an answer is being sent (its head out): a client that left mid-answer,
 *  not one that half-closed after asking (its FIN comes before the answer starts: listeners.ts configure). Cut, as
 *  Node's default did at any FIN, and the upstream request with it. */
export function leftMidAnswer(this: net.Socket & { _httpMessage?: { headersSent: boolean; writableFinished: boolean } }): void {
  if (this._httpMessage?.headersSent && !this._httpMessage.writableFinished) this.destroy();
}

function closeWhenQuiet(s: net.Socket, tries: number): void {
  const i = (s as Tagged)[INFO];
  if (s.destroyed) return;
  if (!i || quiet(s, i)) s.destroy();
  else if (tries > 0) setTimeout(closeWhenQuiet, 250, s, tries - 1).unref();
}

/** Tracks open connections per source: refuses past the cap, and closes all of a source's connections at once when it is banned. */
export class SourceConnections {
  private open = new Map<string, Set<net.Socket>>();
  cap: number;
  /** How many people the source looks like (≥ 1): the cap is multiplied by it. */
  private readonly scale: (source: string) => number;
  /** Idle connections closed to make room (a counter for tests and the operator). */
  idleClosed = 0;
  constructor(cap: number, scale: (source: string) => number = () => 1) { this.cap = cap; this.scale = scale; }

  /** The cap for a source: the configured one, times the people behind its address. */
  capOf(source: string): number { return this.cap > 0 ? scaledCap(this.cap, this.scale(source)) : 0; }

  /** Registers the socket; false (and nothing registered) when its source is at the cap with no idle connection to close. */
  admit(socket: net.Socket, source: string): boolean {
    let set = this.open.get(source);
    if (this.cap > 0 && set && set.size >= this.cap) {
      const cap = this.capOf(source);
      if (set.size >= cap && !this.closeIdle(set, set.size - cap + 1)) return false;
    }
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

  /** Closes the n longest-idle connections of the set (forgotten at once, so the newcomer takes a freed place); false when it has fewer idle ones. */
  private closeIdle(set: Set<net.Socket>, n: number): boolean {
    const idles: net.Socket[] = [];
    for (const s of set) if (idle(s)) idles.push(s);
    if (idles.length < n) return false;
    idles.sort((a, b) => (a as Tagged)[INFO]!.idleSince - (b as Tagged)[INFO]!.idleSince);
    for (let i = 0; i < n; i++) { set.delete(idles[i]); idles[i].destroy(); }
    this.idleClosed += n;
    return true;
  }

  /** Destroys every open connection of a source (a ban takes effect on them at once). The request that brought the
   *  ban may still be answering (a 429 to a client that cannot use a page): its connection goes on the next turn. */
  closeSource(source: string): number {
    const set = this.open.get(source);
    if (!set) return 0;
    for (const s of set) {
      if ((s as Tagged)[INFO]?.active) setImmediate(() => s.destroy());
      else s.destroy();
    }
    return set.size;
  }

  /** Lets go of the connections of the sources `pred` picks: a worker took them while their own worker was being
   *  replaced, and the replacement counts their new ones from zero (kept here too, they would count twice against the
   *  cap). Each closes once nothing is answered on it (at once for an idle one, or one whose head is still coming),
   *  looked at every 250 ms for up to 30 s (a longer stream or long poll is left to end by itself). */
  release(pred: (source: string) => boolean): number {
    let n = 0;
    for (const [source, set] of this.open) if (pred(source)) for (const s of set) { n++; closeWhenQuiet(s, 120); }
    return n;
  }

  count(source: string): number { return this.open.get(source)?.size ?? 0; }
  get sources(): number { return this.open.size; }
}
