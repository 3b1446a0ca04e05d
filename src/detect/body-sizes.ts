// What size of request body each path of a domain usually receives, learned
// from sources with a history of browsing, so that a flood of large bodies to
// a path that takes small ones (2 MB to a login form) stands out from the
// first requests, whether or not it hurts the application yet. A path with
// too few samples judges nothing: an upload endpoint learns its own sizes.
// Bounded: an LRU of paths per domain.
import { LRUCache } from 'lru-cache';

/** Samples a path needs before it judges. */
export const MIN_SAMPLES = 3;
/** A body this many times the path's usual size is out of place ... */
export const FACTOR = 32;
/** ... and never one under this, however small the usual one. */
export const MIN_BYTES = 64 * 1024;
/** The mean follows the last ~50 samples (a moving average once that many are in). */
const WINDOW = 50;

interface Usual { mean: number; n: number }

export class BodySizes {
  private readonly paths: LRUCache<number, Usual>;

  constructor(maxPaths: number) { this.paths = new LRUCache({ max: maxPaths }); }

  /** A body a trusted source sent to the path. */
  learn(path: number, bytes: number): void {
    const u = this.paths.get(path);
    if (!u) { this.paths.set(path, { mean: bytes, n: 1 }); return; }
    u.n++;
    u.mean += (bytes - u.mean) / Math.min(u.n, WINDOW);
  }

  /** [path, mean, samples], least recently used first, for FilterStore.putLearned. */
  entries(): [number, number, number][] {
    const out: [number, number, number][] = [];
    for (const [path, u] of this.paths.entries()) out.push([path, Math.round(u.mean), u.n]);
    return out.reverse();
  }

  /** Takes back saved entries (in the order entries() gave them, so the recency order survives). Bad rows are skipped. */
  restore(rows: unknown): void {
    if (!Array.isArray(rows)) return;
    for (const r of rows) {
      if (!Array.isArray(r) || r.length !== 3 || !r.every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) continue;
      this.paths.set(r[0], { mean: r[1], n: Math.max(1, Math.floor(r[2])) });
    }
  }

  /** True when the body is far larger than the path usually receives (and the path has learned enough). */
  oversized(path: number, bytes: number): boolean {
    if (bytes < MIN_BYTES) return false;
    const u = this.paths.peek(path);
    return u !== undefined && u.n >= MIN_SAMPLES && bytes > FACTOR * u.mean;
  }
}
