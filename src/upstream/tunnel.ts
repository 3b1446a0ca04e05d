// Two sockets spliced together (client ⇄ upstream), for WebSocket upgrades and
// TLS passthrough. What a plain a.pipe(b).pipe(a) lacks, and what kept the
// shutdown waiting for ever (issue 12, item 1):
// - an idle timeout: no byte either way for idleTimeoutMs → both destroyed;
// - a bounded half-close: a FIN from one side is passed on (end()), and if the
//   tunnel is not fully closed within halfCloseGraceMs both are destroyed, so
//   nothing lingers in CLOSE-WAIT / FIN-WAIT-2 behind a peer that keeps its
//   half open;
// - byte counters, and a registry (Tunnels) that shutdown empties at once.
import type { Duplex } from 'node:stream';

/** Why a tunnel ended. */
export type TunnelEnd = 'closed' | 'idle' | 'half-close-timeout' | 'error' | 'shutdown';

export interface TunnelOptions {
  /** No byte in either direction for this long → both sockets destroyed. 0 = no idle timeout. */
  idleTimeoutMs: number;
  /** After the first FIN, the time both sides get to finish; then both are destroyed. */
  halfCloseGraceMs?: number;
  /** Bytes the client sent that were read with its request head (Node's 'upgrade' head): sent upstream first. */
  clientHead?: Buffer;
  /** Bytes of the upstream read past its 101 response: sent to the client first. */
  upstreamHead?: Buffer;
  /** Called once, when both sockets are closed. */
  onEnd?: (t: Tunnel, why: TunnelEnd) => void;
  /** The domain whose statistics its bytes go to (Tunnels.onBytes); none for a passthrough (counted at its end). */
  domain?: string;
}

/** How often open tunnels' bytes are told to statistics: a WebSocket open for hours counts in the 3-minute buckets
 *  it used, as a bill's samples need (at its end only, its whole traffic would land in one). */
export const TUNNEL_BYTES_MS = 10_000;

export const HALF_CLOSE_GRACE_MS = 5000;

export class Tunnel {
  /** Bytes client → upstream, and upstream → client. */
  bytesUp = 0;
  bytesDown = 0;
  readonly startedAt = Date.now();
  /** Set once both sockets are closed. */
  ended: TunnelEnd | null = null;
  /** Bytes up and down already told to statistics (uncounted()). */
  private counted = [0, 0];

  private why: TunnelEnd | null = null;
  private lastActivity = Date.now();
  private idleTimer: NodeJS.Timeout | null = null;
  private graceTimer: NodeJS.Timeout | null = null;
  private open = 2;
  private readonly client: Duplex;
  private readonly upstream: Duplex;
  private readonly opts: TunnelOptions;

  constructor(client: Duplex, upstream: Duplex, opts: TunnelOptions) {
    this.client = client;
    this.upstream = upstream;
    this.opts = opts;
    this.wire(client, upstream, (n) => { this.bytesUp += n; });
    this.wire(upstream, client, (n) => { this.bytesDown += n; });
    if (opts.clientHead?.length) { this.bytesUp += opts.clientHead.length; upstream.write(opts.clientHead); }
    if (opts.upstreamHead?.length) { this.bytesDown += opts.upstreamHead.length; client.write(opts.upstreamHead); }
    if (opts.idleTimeoutMs > 0) this.idleTimer = setTimeout(this.checkIdle, opts.idleTimeoutMs);
    // A socket that was already gone before we got it never emits 'close' again.
    for (const s of [client, upstream]) if (s.closed) this.open--;
    if (client.destroyed || upstream.destroyed) this.destroy('closed');
    if (this.open === 0) this.finish();
  }

  get domain(): string | undefined { return this.opts.domain; }

  /** Bytes up and down since the last call. */
  uncounted(): [number, number] {
    const d: [number, number] = [this.bytesUp - this.counted[0], this.bytesDown - this.counted[1]];
    this.counted = [this.bytesUp, this.bytesDown];
    return d;
  }

  /** Destroys both sockets; `why` is what onEnd reports (the first reason wins). */
  destroy(why: TunnelEnd): void {
    this.why ??= why;
    this.client.destroy();
    this.upstream.destroy();
  }

  /** One direction: from → to, with backpressure, the byte count, and the FIN passed on. */
  private wire(from: Duplex, to: Duplex, count: (n: number) => void): void {
    from.on('data', (chunk: Buffer) => {
      count(chunk.length);
      this.lastActivity = Date.now();
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    from.on('end', () => {
      // Half-close: pass the FIN on, and give the other side a bounded time to finish too.
      to.end();
      this.graceTimer ??= setTimeout(() => this.destroy('half-close-timeout'), this.opts.halfCloseGraceMs ?? HALF_CLOSE_GRACE_MS);
    });
    from.on('error', () => this.destroy('error'));
    from.on('close', () => {
      // A side that closed without a clean end (reset, error) takes the other with it; after a clean end the
      // other side is left to flush what it has, under the grace timer.
      if (!from.readableEnded) this.destroy(this.why ?? 'closed');
      if (--this.open === 0) this.finish();
    });
  }

  private readonly checkIdle = () => {
    this.idleTimer = null;
    const quiet = Date.now() - this.lastActivity;
    if (quiet >= this.opts.idleTimeoutMs) { this.destroy('idle'); return; }
    this.idleTimer = setTimeout(this.checkIdle, this.opts.idleTimeoutMs - quiet);
  };

  private finish(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.idleTimer = this.graceTimer = null;
    this.ended = this.why ?? 'closed';
    this.opts.onEnd?.(this, this.ended);
  }
}

/** Every open tunnel, so that shutdown can destroy them all (a tunnel never drains by itself). */
export class Tunnels {
  private readonly open = new Set<Tunnel>();
  /** Client sockets with no tunnel that shutdown must cut: a passthrough waiting for its upstream to accept (retries
   *  and failover included), a declined upgrade's answer being relayed. The listener's close() waits for them like for
   *  any socket, and no request of Node's server holds them. */
  readonly connecting = new Set<Duplex>();
  /** Where the bytes of tunnels with a domain go, every TUNNEL_BYTES_MS while open and at their end (statistics). */
  onBytes: ((domain: string, up: number, down: number) => void) | null = null;
  private ticker: NodeJS.Timeout | null = null;

  /** Splices client ⇄ upstream and tracks the tunnel until both sockets are closed. */
  add(client: Duplex, upstream: Duplex, opts: TunnelOptions): Tunnel {
    const onEnd = opts.onEnd;
    const t = new Tunnel(client, upstream, {
      ...opts,
      onEnd: (x, why) => { this.open.delete(x); this.count(x); onEnd?.(x, why); },
    });
    if (t.ended === null) this.open.add(t); else this.count(t);
    if (opts.domain !== undefined && this.ticker === null) { this.ticker = setInterval(() => this.countAll(), TUNNEL_BYTES_MS); this.ticker.unref(); }
    return t;
  }

  private count(t: Tunnel): void {
    if (t.domain === undefined || !this.onBytes) return;
    const [up, down] = t.uncounted();
    if (up || down) this.onBytes(t.domain, up, down);
  }

  /** Tells statistics what every open tunnel carried since last time; stops looking once none is open. */
  countAll(): void {
    for (const t of this.open) this.count(t);
    if (this.open.size === 0 && this.ticker) { clearInterval(this.ticker); this.ticker = null; }
  }

  get size(): number { return this.open.size; }

  /** Destroys every tunnel and every client still connecting (shutdown); returns how many tunnels there were. */
  closeAll(): number {
    const n = this.open.size;
    for (const t of [...this.open]) t.destroy('shutdown');
    for (const c of [...this.connecting]) c.destroy();
    return n;
  }
}
