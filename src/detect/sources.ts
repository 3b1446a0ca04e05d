// The source table: what the filter remembers about each source (TCP peer,
// IPv6 per /64). Bounded: an LRU of at most `maxSources` entries, each a
// fixed-size record of numbers, so a flood from a million addresses costs the
// same memory as one from maxSources. The least recently seen source goes
// first; a browser evicted that way keeps its trust cookie and regains its
// standing on its next request.
//
// The records live in typed arrays (source-table.ts: about 200 bytes a source
// instead of 700 as objects); a SourceState is a small view of one record,
// made per lookup, with the fields the detector and extraction read and write.
// Behind the SourceStore interface so that a shared implementation (workers,
// Redis) can replace this in-process one later.
import { F_WHITELISTED, SourceTable, W } from './source-table.ts';
import { F_LAST_MISSED } from './source-layout.ts';

/** Recent paths remembered per source, to tell new paths and cache-busting apart. */
export const RING = 8;
export const UA_SLOTS = 4;

/**
 * One source's record. A view, not a copy: valid until the source leaves the
 * table (evicted or deleted), after which its slot holds another source. The
 * detector uses one within a single call, which is all this allows.
 */
export class SourceState {
  readonly t: SourceTable;
  /** Where the record starts in the table's 4-byte words. */
  readonly b: number;

  /** `new SourceState(rules)`: a source of its own (a one-record table), for tests and pure uses. */
  constructor(rules: number | SourceTable, b = 0) {
    if (typeof rules === 'number') { this.t = new SourceTable(rules, 1); this.b = this.t.touch('') * this.t.stride; }
    else { this.t = rules; this.b = b; }
  }

  /** Bucket level per rule: a live view (writes go to the table). It allocates: the engine reads `t.f32` at `levelsAt` instead. */
  get levels(): Float32Array { return this.t.f32.subarray(this.b + W.levels, this.b + W.levels + this.t.rules); }
  get levelsAt(): number { return this.b + W.levels; }
  /** Time of the last engine evaluation (buckets leak from here). */
  get last(): number { return this.t.getTime(this.b + W.last); }
  set last(v: number) { this.t.setTime(this.b + W.last, v, true); }
  /** Until when the source passes the challenge without one (cookie returned). */
  get trustUntil(): number { return this.t.getTime(this.b + W.trustUntil); }
  set trustUntil(v: number) { this.t.setTime(this.b + W.trustUntil, v, false); }
  /** When the source was last sent a challenge (0: never). */
  get challengedAt(): number { return this.t.getTime(this.b + W.challengedAt); }
  set challengedAt(v: number) { this.t.setTime(this.b + W.challengedAt, v, false); }
  /** Since when the source has behaved like a browser (page and assets, low score); 0: not yet. */
  get goodSince(): number { return this.t.getTime(this.b + W.goodSince); }
  set goodSince(v: number) { this.t.setTime(this.b + W.goodSince, v, false); }
  /** Last combined score, for ranking suspects (Float32: thresholds are far coarser). */
  get score(): number { return this.t.f32[this.b + W.score]; }
  set score(v: number) { this.t.f32[this.b + W.score] = v; }
  /** Pages and assets seen, saturating at 255: only "none", "one" and "two or more" are ever asked. */
  get pages(): number { return this.t.u8[(this.b + W.counts) * 4 + 2]; }
  set pages(v: number) { this.t.u8[(this.b + W.counts) * 4 + 2] = v > 255 ? 255 : v; }
  get assets(): number { return this.t.u8[(this.b + W.counts) * 4 + 3]; }
  set assets(v: number) { this.t.u8[(this.b + W.counts) * 4 + 3] = v > 255 ? 255 : v; }
  /** Last domain it asked for (the config's string, interned by the table). */
  get domain(): string | null { return this.t.domainOf(this.t.u16[(this.b + W.counts) * 2]); }
  set domain(v: string | null) { this.t.u16[(this.b + W.counts) * 2] = this.t.domainId(v); }
  /** Whitelist verdict, cached for the whitelist version it was computed for (-1: none yet). */
  get wlVersion(): number { return this.t.getWlVersion(this.b); }
  set wlVersion(v: number) { this.t.setWlVersion(this.b, v); }
  get whitelisted(): boolean { return (this.t.u8[(this.b + W.marks) * 4 + 3] & F_WHITELISTED) !== 0; }
  set whitelisted(v: boolean) {
    const i = (this.b + W.marks) * 4 + 3;
    this.t.u8[i] = v ? this.t.u8[i] | F_WHITELISTED : this.t.u8[i] & ~F_WHITELISTED;
  }

  /**
   * Records a User-Agent fingerprint; true when it is not among the source's recent ones (and the source had one
   * before). Kept as 16 bits (folded from the 32-bit hash): four of them are compared, so two different User-Agents
   * pass for one about once in 16,000 changes, and a rotating bot is still seen rotating.
   */
  newUserAgent(h: number): boolean {
    const u16 = this.t.u16, u = (this.b + W.uas) * 2, k = ((h ^ (h >>> 16)) & 0xffff) || 1;
    for (let i = 0; i < UA_SLOTS; i++) if (u16[u + i] === k) return false;
    const first = u16[u] === 0;
    // Ring positions share a byte: the path ring's in bits 0-2, the User-Agent ring's in bits 4-5.
    const m = (this.b + W.marks) * 4 + 2, pos = this.t.u8[m], at = (pos >> 4) & 3;
    u16[u + at] = k;
    this.t.u8[m] = (pos & 0x0f) | (((at + 1) & 3) << 4);
    return !first;
  }

  /** Whether the newest path of the ring (see lastMissed) is `pathHash`. */
  isNewestPath(pathHash: number): boolean {
    const at = (this.t.u8[(this.b + W.marks) * 4 + 2] + 7) & 7;
    return this.t.i32[this.b + W.paths + at * 2] === (pathHash | 0);
  }
  /** The newest path of the ring was a miss counted against the source: found next (a sync client's HEAD 404, then its
   *  PUT), it takes the whole miss back. */
  get lastMissed(): boolean { return (this.t.u8[(this.b + W.marks) * 4 + 3] & F_LAST_MISSED) !== 0; }
  set lastMissed(v: boolean) {
    const i = (this.b + W.marks) * 4 + 3;
    this.t.u8[i] = v ? this.t.u8[i] | F_LAST_MISSED : this.t.u8[i] & ~F_LAST_MISSED;
  }

  /** Records a path; returns 0 if it was seen (same keys), 1 if new, 2 if seen with other query keys (cache-busting). */
  notePath(pathHash: number, keysHash: number): 0 | 1 | 2 {
    const i32 = this.t.i32, p = this.b + W.paths, ph = pathHash | 0, kh = keysHash | 0;
    for (let i = 0; i < RING * 2; i += 2) {
      if (i32[p + i] === ph) {
        if (i32[p + i + 1] === kh) return 0;
        i32[p + i + 1] = kh;
        return keysHash !== 0 ? 2 : 0;
      }
    }
    const m = (this.b + W.marks) * 4 + 2, pos = this.t.u8[m], at = pos & 7;
    i32[p + at * 2] = ph;
    i32[p + at * 2 + 1] = kh;
    this.t.u8[m] = (pos & 0xf8) | ((at + 1) & 7);
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
  private readonly table: SourceTable;

  /** `buffer`: storage to use instead of its own (SourceTable.bytesFor(rules, max) bytes; a SharedArrayBuffer later). */
  constructor(max: number, rules: number, buffer?: ArrayBufferLike) {
    this.table = new SourceTable(rules, max, buffer);
  }

  /** The view made last: a request's judge() and observe() ask for the same source (a view names a slot, not a source). */
  private last: SourceState | null = null;

  touch(source: string): SourceState {
    const t = this.table, b = t.touch(source) * t.stride;
    if (this.last?.b !== b) this.last = new SourceState(t, b);
    return this.last;
  }

  peek(source: string): SourceState | undefined {
    const t = this.table, slot = t.find(source);
    return slot < 0 ? undefined : new SourceState(t, slot * t.stride);
  }

  delete(source: string): void { this.table.remove(source); }
  get size(): number { return this.table.size; }
  get max(): number { return this.table.max; }
  get evicted(): number { return this.table.evicted; }

  /** Most recently seen first. Views: collect what you need before changing the table. */
  *entries(): IterableIterator<[string, SourceState]> {
    const t = this.table;
    for (const slot of t.slots()) yield [t.keyOf(slot), new SourceState(t, slot * t.stride)];
  }

  clear(): void { this.table.clear(); }
}
