// The send deadline of one response (nginx's send_timeout): while bytes wait
// for the client, the client must take some of them every `ms`, or its
// connection is cut. Progress is judged on two counters, because neither is
// enough alone: res.writableLength drops only when a whole write request has
// gone to the kernel (a 64 KiB chunk to a client at 1 KiB/s takes a minute),
// and libuv's write queue shrinks as a partly written request goes out.
import type { ServerResponse } from 'node:http';

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

export class SendDeadline {
  private timer: NodeJS.Timeout | null = null;
  /** res.writableLength at the last check, plus what was written since: less now means bytes left. */
  private lengthMark = 0;
  private queueMark = 0;
  private readonly res: ServerResponse;
  private readonly ms: number;
  private readonly onStalled: () => void;

  /** `onStalled` runs once, when a whole `ms` passed without the client taking a byte; then the response is destroyed. */
  constructor(res: ServerResponse, ms: number, onStalled: () => void) {
    this.res = res;
    this.ms = ms;
    this.onStalled = onStalled;
    res.on('close', () => this.stop());
    res.on('finish', () => this.stop());
  }

  /** After each write (`added` bytes) and at the end: keeps the deadline running while anything waits. */
  wrote(added: number): void {
    if (this.timer) { this.lengthMark += added; return; }
    if (this.res.writableLength > 0 && !this.res.destroyed) this.arm();
  }

  stop(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }

  private arm(): void {
    this.lengthMark = this.res.writableLength;
    this.queueMark = writeQueue(this.res);
    this.timer = setTimeout(this.check, this.ms);
  }

  private readonly check = () => {
    this.timer = null;
    const len = this.res.writableLength;
    if (this.res.destroyed || len === 0) return;
    if (len < this.lengthMark || writeQueue(this.res) < this.queueMark) { this.arm(); return; }
    this.onStalled();
    this.res.destroy();
  };
}
