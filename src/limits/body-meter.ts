// Sits between the client's request body and the upstream: counts bytes, cuts
// a chunked body as soon as it passes the size limit, and cuts a body that
// trickles in slower than the minimum rate (slow POST). Time spent waiting on
// the upstream (backpressure) is not held against the client.
import { Transform, type TransformCallback } from 'node:stream';

export class BodyLimitError extends Error {
  readonly reason: 'body-too-large' | 'body-too-slow';
  constructor(reason: 'body-too-large' | 'body-too-slow') { super(reason); this.reason = reason; }
}

export class BodyMeter extends Transform {
  bytes = 0;
  /** Bytes already told through onStep (the rest is told with the request's end). */
  told = 0;
  /** Told each `stepBytes` more of a body on its way upstream: an upload lasting minutes counts in the 3-minute samples
   *  (and the month) it used, not all in the one where it ended. */
  onStep: ((bytes: number) => void) | null = null;
  stepBytes = 64 * 1024;
  private timer: NodeJS.Timeout | null = null;
  private started = Date.now();
  private waitedMs = 0;
  private lastTick = Date.now();

  private readonly maxBytes: number;
  private readonly minRate: number;
  private readonly graceMs: number;

  constructor(maxBytes: number, minRate: number, graceMs: number) {
    super();
    this.maxBytes = maxBytes;
    this.minRate = minRate;
    this.graceMs = graceMs;
    if (minRate > 0) {
      this.timer = setInterval(() => this.checkRate(), 1000);
      this.timer.unref();
    }
  }

  private checkRate(): void {
    const now = Date.now();
    // While the upstream is not reading, the client is not the slow one.
    if (this.readableLength >= this.readableHighWaterMark) this.waitedMs += now - this.lastTick;
    this.lastTick = now;
    const active = now - this.started - this.waitedMs;
    if (active > this.graceMs && this.bytes < (this.minRate * active) / 1000) this.destroy(new BodyLimitError('body-too-slow'));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) { cb(new BodyLimitError('body-too-large')); return; }
    if (this.onStep && this.bytes - this.told >= this.stepBytes) { const n = this.bytes - this.told; this.told = this.bytes; this.onStep(n); }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void { this.stop(); cb(); }
  override _destroy(err: Error | null, cb: (e: Error | null) => void): void { this.stop(); cb(err); }
  private stop(): void { if (this.timer) clearInterval(this.timer); this.timer = null; }
}
