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
  }

  /** Listened for only once something is held: most responses never go past the high-water mark, and three
   *  listeners per response are a measurable share of a small request's cost. */
  private listen(): void {
    // 'drain' means everything written has gone to the kernel: nothing is held any more.
    const release = () => { readAheadBudget.held -= this.held; this.held = 0; };
    this.res.on('drain', release);
    this.res.on('finish', release);
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

/**
 * One sweep per deadline length, over every response that has bytes waiting for its client: a response is put
 * in the set when it has something waiting (after each write, and after end(), since the server corks until the
 * next tick, that is most responses for an instant) and leaves it at the next sweep once everything has gone.
 * A timer and two listeners per response would cost more than the rest of a small response's own bookkeeping;
 * a Set insertion and one look per sweep do not. A client is cut between `ms` and `ms` + one sweep after its
 * last progress.
 */
class SendWatch {
  private readonly entries = new Set<SendDeadline>();
  private timer: NodeJS.Timeout | null = null;
  private readonly ms: number;
  private readonly every: number;

  constructor(ms: number) {
    this.ms = ms;
    this.every = Math.max(5, Math.min(1000, Math.floor(ms / 4)));
  }

  add(d: SendDeadline): void {
    this.entries.add(d);
    if (!this.timer) { this.timer = setInterval(sweep, this.every, this); this.timer.unref(); }
  }

  /** @internal the interval's callback */
  sweep(): void {
    const now = performance.now();
    for (const d of this.entries) if (!d.stillWaiting(now, this.ms)) this.entries.delete(d);
    // Nothing waits: no wake-ups while idle.
    if (this.entries.size === 0 && this.timer) { clearInterval(this.timer); this.timer = null; }
  }
}

function sweep(w: SendWatch): void { w.sweep(); }

const watches = new Map<number, SendWatch>();
const watchFor = (ms: number): SendWatch => {
  let w = watches.get(ms);
  if (!w) watches.set(ms, (w = new SendWatch(ms)));
  return w;
};

export class SendDeadline {
  private watched = false;
  /** res.writableLength at the last progress, plus what was written since: less now means bytes left. */
  private lengthMark = 0;
  private queueMark = 0;
  private progressAt = 0;
  private readonly res: ServerResponse;
  private readonly ms: number;
  private readonly owner: Stallable;

  /** `owner.onStalled()` runs once, when a whole `ms` passed without the client taking a byte; then the response is destroyed. */
  constructor(res: ServerResponse, ms: number, owner: Stallable) {
    this.res = res;
    this.ms = ms;
    this.owner = owner;
  }

  /** After each write (`added` bytes) and at the end: keeps the deadline running while anything waits. */
  wrote(added: number): void {
    if (this.watched) { this.lengthMark += added; return; }
    if (this.res.writableLength === 0 || this.res.destroyed) return;
    this.watched = true;
    this.lengthMark = this.res.writableLength;
    this.queueMark = writeQueue(this.res);
    this.progressAt = performance.now();
    watchFor(this.ms).add(this);
  }

  /** @internal for the sweep: false once nothing waits any more (or the client was cut). */
  stillWaiting(now: number, ms: number): boolean {
    const len = this.res.writableLength;
    if (this.res.destroyed || len === 0) { this.watched = false; return false; }
    const queue = writeQueue(this.res);
    if (len < this.lengthMark || queue < this.queueMark) {
      this.lengthMark = len;
      this.queueMark = queue;
      this.progressAt = now;
      return true;
    }
    if (now - this.progressAt < ms) return true;
    this.watched = false;
    this.owner.onStalled();
    this.res.destroy();
    return false;
  }
}
