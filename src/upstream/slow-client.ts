// What a response does about a slow client, nginx's way but bounded:
// - ReadAhead: the upstream response is read ahead of the client, up to a
//   per-response cap and within one process-wide budget, so the upstream
//   connection is not tied to the client's pace (proxy_buffering);
// - SendDeadline: while bytes wait for the client, the client must take some
//   of them every `ms`, or its connection is cut (send_timeout). Progress is
//   judged on two counters, because neither is enough alone: writableLength
//   drops only when a whole write request has gone to the kernel (a 64 KiB
//   chunk to a client at 1 KiB/s takes a minute), and libuv's write queue
//   shrinks as a partly written request goes out.
import type { ServerResponse } from 'node:http';

/**
 * All responses' read-ahead together may hold at most `limit` bytes: a crowd of clients that do not read (each
 * holding up to the per-response cap) cannot take the process's memory. Past it a response falls back to plain
 * backpressure (the upstream waits for the client). Mutable, so a config key can set it.
 */
export const readAheadBudget = { limit: 64 * 1024 * 1024, held: 0 };

/** One response's share of the read-ahead budget. */
export class ReadAhead {
  private held = 0;
  private listening = false;
  private readonly res: ServerResponse;
  private readonly cap: number;

  constructor(res: ServerResponse, cap: number) {
    this.res = res;
    this.cap = cap;
    // One 'finish' listener on every response, whether or not anything is ever held: measured on Node 24 under the
    // throughput bench, responses without one made scavenges about ten times slower (p99 35 ms instead of 8, and
    // 1.5× the CPU per request); with it GC is back to what it was. The cause inside Node was not pinned down.
    res.on('finish', () => this.release());
  }

  private release(): void { readAheadBudget.held -= this.held; this.held = 0; }

  /** Listened for only once something is held: most responses never go past the high-water mark, and three
   *  listeners per response are a measurable share of a small request's cost. */
  private listen(): void {
    // 'drain' means everything written has gone to the kernel: nothing is held any more.
    const release = () => this.release();
    this.res.on('drain', release);
    this.res.on('close', release);
  }

  /** After a write: whether the upstream may keep sending. When false, a 'drain' will come (write() said false). */
  mayContinue(): boolean {
    const want = this.res.writableLength;
    // Up to the stream's own high-water mark nothing is read ahead (and no 'drain' would be emitted).
    if (want <= this.held || want <= this.res.writableHighWaterMark) return true;
    if (want > this.cap || readAheadBudget.held + (want - this.held) > readAheadBudget.limit) return false;
    if (this.held === 0 && !this.listening) { this.listening = true; this.listen(); }
    readAheadBudget.held += want - this.held;
    this.held = want;
    return true;
  }
}

/**
 * nginx's default send_timeout: long enough for a mobile client to ride out TCP
 * retransmission back-off, short enough that a client that stopped reading does
 * not keep its buffered response and its connection for ever.
 */
export const SEND_TIMEOUT_MS = 60_000;

/** Bytes libuv still has to hand to the kernel for this response's socket (0 when unknown). */
function writeQueue(res: ServerResponse): number {
  return (res.socket as { _handle?: { writeQueueSize?: number } } | null)?._handle?.writeQueueSize ?? 0;
}

/** What a send deadline tells when the client stalled. */
export interface Stallable { onStalled(): void }

export class SendDeadline {
  private timer: NodeJS.Timeout | null = null;
  /** res.writableLength at the last check, plus what was written since: less now means bytes left. */
  private lengthMark = 0;
  private queueMark = 0;
  private readonly res: ServerResponse;
  private readonly ms: number;
  private readonly owner: Stallable;

  private listening = false;
  private deferred = false;

  /** `owner.onStalled()` runs once, when a whole `ms` passed without the client taking a byte; then the response is destroyed. */
  constructor(res: ServerResponse, ms: number, owner: Stallable) {
    this.res = res;
    this.ms = ms;
    this.owner = owner;
  }

  /** After each write (`added` bytes) and at the end: keeps the deadline running while anything waits. */
  wrote(added: number): void {
    if (this.timer) { this.lengthMark += added; return; }
    if (!this.waiting()) return;
    // Node corks the socket from a response's first write to the next tick, so right after it the bytes always
    // wait: looked at again once the socket is uncorked (a tick, not a timer and two listeners per response).
    if ((this.res.socket?.writableCorked ?? 0) > 0) { if (!this.deferred) { this.deferred = true; process.nextTick(recheck, this); } return; }
    this.arm();
  }

  /** @internal after the tick that uncorked the socket */
  recheck(): void {
    this.deferred = false;
    if (!this.timer && this.waiting()) this.arm();
  }

  /** Bytes of this response are still on their way to the client. */
  private waiting(): boolean { return this.res.writableLength > 0 && !this.res.destroyed; }

  stop(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }

  private arm(): void {
    this.lengthMark = this.res.writableLength;
    this.queueMark = writeQueue(this.res);
    // Listeners and timer only for a response that had to wait for its client (the minority): no closure per response.
    if (!this.listening) {
      this.listening = true;
      const stop = () => this.stop();
      this.res.on('close', stop);
      this.res.on('finish', stop);
    }
    this.timer = setTimeout(check, this.ms, this);
  }

  /** @internal the timer's callback */
  check(): void {
    this.timer = null;
    const len = this.res.writableLength;
    if (this.res.destroyed || len === 0) return;
    if (len < this.lengthMark || writeQueue(this.res) < this.queueMark) { this.arm(); return; }
    this.owner.onStalled();
    this.res.destroy();
  }
}

function check(d: SendDeadline): void { d.check(); }
function recheck(d: SendDeadline): void { d.recheck(); }
