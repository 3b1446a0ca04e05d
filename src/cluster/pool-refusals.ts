// What the primary's pool refuses before a worker has a connection: the count of its refusals per worker (shown by
// /api/workers, logged at most every REFUSED_LOG_MS with the count since), and the connections of each source waiting
// for their worker (bounded by limits.maxConnectionsPerSource: one address must not take every place of a worker
// that fell behind for a moment). Time comes from the caller.
import type { Logger } from '../log.ts';

/** A refusal is logged at most this often per worker (with the count since). */
const REFUSED_LOG_MS = 10_000;

export class PoolRefusals {
  private readonly counts: { total: number; unlogged: number; loggedAt: number }[];
  private readonly waiting = new Map<string, number>();
  private readonly log: Logger;
  private readonly now: () => number;

  constructor(workers: number, log: Logger, now: () => number) {
    this.counts = Array.from({ length: workers }, () => ({ total: 0, unlogged: 0, loggedAt: -Infinity }));
    this.log = log;
    this.now = now;
  }

  /** A connection closed for worker `index` (too many wait for it; none is ready; its source has too many waiting). */
  refuse(index: number, why: string, maxWaiting: number): void {
    const r = this.counts[index], now = this.now();
    r.total++;
    r.unlogged++;
    if (now - r.loggedAt < REFUSED_LOG_MS) return;
    this.log.warn({ worker: index, refused: r.unlogged, waiting: maxWaiting }, `connections refused: ${why}`);
    r.loggedAt = now;
    r.unlogged = 0;
  }

  total(index: number): number { return this.counts[index].total; }

  /** Counts a connection of `source` in as waiting, unless `cap` of its connections already wait (0: no bound). */
  enter(source: string, cap: number): boolean {
    const n = this.waiting.get(source) ?? 0;
    if (cap > 0 && n >= cap) return false;
    this.waiting.set(source, n + 1);
    return true;
  }

  /** A waiting connection of `source` left the queue (handed over, closed, or moved to another worker). */
  left(source: string): void {
    const n = (this.waiting.get(source) ?? 1) - 1;
    if (n > 0) this.waiting.set(source, n); else this.waiting.delete(source);
  }
}
