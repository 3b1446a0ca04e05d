// The source table: what the filter remembers about each source (TCP peer,
// IPv6 per /64). Bounded: an LRU of at most `maxSources` entries, each a
// fixed-size record of numbers, so a flood from a million addresses costs the
// same memory as one from maxSources. The least recently seen source goes
// first; a browser evicted that way keeps its trust cookie and regains its
// standing on its next request.
//
// Behind the SourceStore interface so that a shared implementation (workers,
// Redis) can replace this in-process one later.
import { LRUCache } from 'lru-cache';

/** Recent paths remembered per source, to tell new paths and cache-busting apart. */
export const RING = 8;
export const UA_SLOTS = 4;

export class SourceState {
  /** Bucket level per rule (plain array of doubles: far smaller per entry than a typed array). */
  levels: number[];
  /** Time of the last engine evaluation (buckets leak from here). */
  last = 0;
  /** Recent non-query path hashes and their query-key hashes, RING pairs. */
  paths: number[];
  pathPos = 0;
  /** Recent User-Agent fingerprints (UA_SLOTS): several browsers behind one NAT address are not "rotation". */
  uas: number[];
  uaPos = 0;
  pages = 0;
  assets = 0;
  /** Until when the source passes the challenge without one (cookie returned). */
  trustUntil = 0;
  /** When the source was last sent a challenge (0: never). */
  challengedAt = 0;
  /** Since when the source has behaved like a browser (page and assets, low score); 0: not yet. */
  goodSince = 0;
  /** Last combined score, for ranking suspects. */
  score = 0;
  /** Last domain it asked for (the string is the config's, not a copy). */
  domain: string | null = null;
  /** Whitelist verdict, cached for the whitelist version it was computed for. */
  wlVersion = -1;
  whitelisted = false;

  constructor(rules: number) {
    this.levels = new Array<number>(rules).fill(0);
    this.paths = new Array<number>(RING * 2).fill(0);
    this.uas = new Array<number>(UA_SLOTS).fill(0);
  }

  /** Records a User-Agent fingerprint; true when it is not among the source's recent ones (and the source had one before). */
  newUserAgent(h: number): boolean {
    const u = this.uas;
    for (let i = 0; i < UA_SLOTS; i++) if (u[i] === h) return false;
    const first = u[0] === 0;
    u[this.uaPos] = h;
    this.uaPos = (this.uaPos + 1) % UA_SLOTS;
    return !first;
  }

  /** Records a path; returns 0 if it was seen (same keys), 1 if new, 2 if seen with other query keys (cache-busting). */
  notePath(pathHash: number, keysHash: number): 0 | 1 | 2 {
    const p = this.paths;
    for (let i = 0; i < RING * 2; i += 2) {
      if (p[i] === pathHash) {
        if (p[i + 1] === keysHash) return 0;
        p[i + 1] = keysHash;
        return keysHash !== 0 ? 2 : 0;
      }
    }
    p[this.pathPos] = pathHash;
    p[this.pathPos + 1] = keysHash;
    this.pathPos = (this.pathPos + 2) % (RING * 2);
    return 1;
  }

}

export interface SourceStore {
  /** The source's state, created when absent (may evict the least recently seen one). */
  touch(source: string): SourceState;
  peek(source: string): SourceState | undefined;
  delete(source: string): void;
  readonly size: number;
  readonly max: number;
  readonly evicted: number;
  entries(): IterableIterator<[string, SourceState]>;
  clear(): void;
}

export class LruSourceStore implements SourceStore {
  private readonly lru: LRUCache<string, SourceState>;
  private readonly rules: number;
  evicted = 0;

  constructor(max: number, rules: number) {
    this.rules = rules;
    this.lru = new LRUCache<string, SourceState>({ max, dispose: (_v, _k, reason) => { if (reason === 'evict') this.evicted++; } });
  }

  touch(source: string): SourceState {
    let s = this.lru.get(source);
    if (!s) { s = new SourceState(this.rules); this.lru.set(source, s); }
    return s;
  }

  peek(source: string): SourceState | undefined { return this.lru.peek(source); }
  delete(source: string): void { this.lru.delete(source); }
  get size(): number { return this.lru.size; }
  get max(): number { return this.lru.max; }
  entries(): IterableIterator<[string, SourceState]> { return this.lru.entries() as IterableIterator<[string, SourceState]>; }
  clear(): void { this.lru.clear(); }
}
