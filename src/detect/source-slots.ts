// The source table's storage (source-table.ts adds the values): one
// fixed-size record of numbers per source in one ArrayBuffer, an exact LRU of
// them (a doubly linked list in the records), and an open-addressing index
// from key to slot. A JS object per source (the former SourceState in an
// lru-cache) cost ~700 bytes with its Map entry and key string; a record costs
// 4 × (29 + rules) bytes (184 with the 17 default rules), the index 8–16 more,
// and its key nothing: an IPv4 address is the record's key word, an IPv6 /64
// its two key words. Other keys (names in tests, a /64 spelt otherwise than
// sourceKey() spells it) are strings in a Map beside it.
//
// Everything that grows with the number of sources lives in `buffer`, so a
// later version can put it in a SharedArrayBuffer (pass one of bytesFor(max)
// bytes: the table then has its full size and never grows). This one is
// single-threaded: nothing here locks, and the string keys stay in this
// thread. An owned buffer starts small and doubles up to `max`. The layout of
// a record and of the header: source-layout.ts; where a key goes in the index,
// and why its hash is keyed: source-hash.ts.
import { ipv4, prefix64Key, prefix64Words } from '../listen/source.ts';
import { LONG_PROBE, longestRun, TABLES } from './source-hash.ts';
import { F_LIVE, F_STRING_KEY, H, HEADER_WORDS, indexSize, NEVER, W } from './source-layout.ts';

export { ipv4 };
export { F_WHITELISTED, H, NEVER, SPILLED, W } from './source-layout.ts';

const PARSED_MAX = 8192;
/** What parse() says of a key that is not a dotted quad: a string key, or a /64 (its words in `parsed6`). */
const STRING = -1;
const PREFIX64 = -2;

export class SourceSlots {
  readonly rules: number;
  /** Words per record. */
  readonly stride: number;
  readonly max: number;
  buffer!: ArrayBufferLike;
  i32!: Int32Array;
  f32!: Float32Array;
  u16!: Uint16Array;
  u8!: Uint8Array;
  protected h!: Int32Array;
  protected hf!: Float64Array;
  private idx!: Int32Array;
  private shift = 0;
  private readonly owned: boolean;
  private readonly strings = new Map<string, number>();
  private readonly parsed = new Map<string, number>();
  private readonly parsed6 = new Map<string, [hi: number, lo: number]>();
  private readonly stringOf = new Map<number, string>();
  /** Exact times the Int32 offsets cannot hold, by word index (source-table.ts); they go with their slot. */
  protected readonly spill = new Map<number, number>();
  /** The last key touched and its slot: judge() and observe() of one request ask for the same source. */
  private lastKey: string | null = null;
  private lastSlot = -1;
  /** 32 random bits (tests inject theirs). */
  private readonly random: () => number;
  private rehashCount = 0;
  /** The hash's random tables (source-hash.ts): 8 × 256 words, one table per byte of the key's two words. A later
   *  table shared between threads must share these too. */
  private tab = new Int32Array(TABLES * 256);

  /** Bytes of a buffer holding `max` sources of `rules` rules (for a caller that brings its own, e.g. shared, buffer). */
  static bytesFor(rules: number, max: number): number {
    return (max * (W.levels + rules) + indexSize(max) + 1 + HEADER_WORDS) * 4;
  }

  constructor(rules: number, max: number, buffer?: ArrayBufferLike, random: () => number = () => (Math.random() * 2 ** 32) | 0) {
    this.rules = rules;
    this.stride = W.levels + rules;
    this.max = Math.max(1, max);
    this.owned = buffer === undefined;
    this.random = random;
    this.layout(buffer ?? new ArrayBuffer(SourceSlots.bytesFor(rules, Math.min(this.max, 1024))), buffer ? this.max : Math.min(this.max, 1024));
    this.reset();
    this.draw();
  }

  private layout(buffer: ArrayBufferLike, capacity: number): void {
    if (buffer.byteLength < SourceSlots.bytesFor(this.rules, capacity)) throw new Error(`source table: buffer of ${buffer.byteLength} bytes, ${SourceSlots.bytesFor(this.rules, capacity)} needed`);
    this.buffer = buffer;
    this.i32 = new Int32Array(buffer);
    this.f32 = new Float32Array(buffer);
    this.u16 = new Uint16Array(buffer);
    this.u8 = new Uint8Array(buffer);
    // Records from word 0 (a slot's record is at slot × stride), then the index, then the header.
    const n = indexSize(capacity);
    const at = capacity * this.stride;
    this.idx = this.i32.subarray(at, at + n);
    this.shift = 32 - Math.log2(n);
    // (Float64 words must start at a multiple of 8 bytes.)
    const hd = (at + n + 1) & ~1;
    this.h = this.i32.subarray(hd, hd + HEADER_WORDS);
    this.hf = new Float64Array(buffer, hd * 4, 2);
    this.h[H.capacity] = capacity;
  }

  private reset(): void {
    const h = this.h;
    h[H.head] = h[H.tail] = h[H.free] = -1;
    h[H.used] = h[H.size] = h[H.wlBase] = h[H.timeSet] = 0;
    this.hf[0] = 0;
    this.hf[1] = 0;
    this.idx.fill(0);
    this.strings.clear(); this.stringOf.clear(); this.spill.clear();
    this.lastKey = null;
  }

  get size(): number { return this.h[H.size]; }
  /** Sources keyed by a string (neither an IPv4 address nor a /64 as sourceKey() writes it): each costs a Map entry. */
  get stringKeys(): number { return this.strings.size; }
  get evicted(): number { return this.hf[1]; }
  get capacity(): number { return this.h[H.capacity]; }
  /** Times the index was rebuilt on new random tables because keys piled up on one place (see LONG_PROBE). */
  get rehashes(): number { return this.rehashCount; }

  /** The most any lookup can walk now (for tests and diagnostics; O(index)). */
  longestRun(): number { return longestRun(this.idx); }

  // ---- keys -----------------------------------------------------------------------------------

  /** The source's slot, or -1; its recency is unchanged. */
  find(key: string): number {
    if (key === this.lastKey) return this.lastSlot;
    const v4 = this.parse(key);
    if (v4 >= 0) return this.probe(v4 | 0, -1);
    if (v4 === PREFIX64) { const w = this.parsed6.get(key)!; return this.probe(w[1], w[0]); }
    return this.strings.get(key) ?? -1;
  }

  /**
   * ipv4(key) (or STRING, or PREFIX64 with the words in parsed6), remembered for the last few thousand keys: a Map
   * lookup (the string caches its hash) costs a third of parsing the digits again, and the same sources come back
   * request after request. Bounded, so a flood of new addresses costs a parse and a set each, and the memory of a
   * few thousand entries.
   */
  private parse(key: string): number {
    let v = this.parsed.get(key);
    if (v !== undefined) return v;
    if (this.parsed.size >= PARSED_MAX) { this.parsed.clear(); this.parsed6.clear(); }
    v = ipv4(key);
    if (v < 0) {
      const w = prefix64Words(key);
      if (w === null || w[0] === 0xffffffff) v = STRING;
      else { v = PREFIX64; this.parsed6.set(key, [w[0] | 0, w[1] | 0]); }
    }
    this.parsed.set(key, v);
    return v;
  }

  /** The source's slot, made the most recent; a fresh record when absent (the least recent one goes when full). */
  touch(key: string): number {
    let slot = this.find(key);
    if (slot >= 0) { if (slot !== this.h[H.tail]) { this.unlink(slot); this.append(slot); } }
    else slot = this.insert(key);
    this.lastKey = key;
    this.lastSlot = slot;
    return slot;
  }

  remove(key: string): void {
    const slot = this.find(key);
    if (slot < 0) return;
    this.unlink(slot);
    this.release(slot);
    this.i32[slot * this.stride + W.next] = this.h[H.free];
    this.h[H.free] = slot;
    this.h[H.size]--;
  }

  keyOf(s: number): string {
    if (this.u8[(s * this.stride + W.marks) * 4 + 3] & F_STRING_KEY) return this.stringOf.get(s)!;
    const k = this.i32[s * this.stride + W.key] >>> 0, k2 = this.i32[s * this.stride + W.key2];
    if (k2 !== -1) return prefix64Key(k2 >>> 0, k);
    return `${k >>> 24}.${(k >>> 16) & 255}.${(k >>> 8) & 255}.${k & 255}`;
  }

  /** Live slots, most recently seen first (lru-cache's order). */
  *slots(): IterableIterator<number> {
    for (let s = this.h[H.tail]; s >= 0; s = this.i32[s * this.stride + W.prev]) yield s;
  }

  clear(): void {
    this.i32.fill(0, 0, this.capacity * this.stride);
    const evicted = this.evicted;
    this.reset();
    this.hf[1] = evicted;
  }

  /** Index position of a key (k2 = -1: an IPv4 address, hashed as the word alone): simple tabulation on the table's
   *  random tables (why: source-hash.ts). */
  private hash(k: number, k2: number): number {
    const t = this.tab;
    let x = t[k & 255] ^ t[256 | ((k >>> 8) & 255)] ^ t[512 | ((k >>> 16) & 255)] ^ t[768 | (k >>> 24)];
    if (k2 !== -1) x ^= t[1024 | (k2 & 255)] ^ t[1280 | ((k2 >>> 8) & 255)] ^ t[1536 | ((k2 >>> 16) & 255)] ^ t[1792 | (k2 >>> 24)];
    return x >>> this.shift;
  }

  private probe(k: number, k2: number): number {
    const idx = this.idx, i32 = this.i32, mask = idx.length - 1;
    for (let p = this.hash(k, k2); ; p = (p + 1) & mask) {
      const e = idx[p];
      if (e === 0) return -1;
      const b = (e - 1) * this.stride;
      if (i32[b + W.key] === k && i32[b + W.key2] === k2) return e - 1;
    }
  }

  private insert(key: string): number {
    if (this.h[H.free] < 0 && this.h[H.used] === this.capacity) this.grow();
    // (After grow(): the header and the views are new.)
    const h = this.h;
    let slot = h[H.free];
    if (slot >= 0) h[H.free] = this.i32[slot * this.stride + W.next];
    else if (h[H.used] < this.capacity) slot = h[H.used]++;
    else {
      // Full: the least recently seen source goes.
      slot = h[H.head];
      this.unlink(slot);
      this.release(slot);
      this.hf[1]++;
      h[H.size]--;
    }
    const b = slot * this.stride;
    this.i32.fill(0, b, b + this.stride);
    this.i32[b + W.trustUntil] = this.i32[b + W.goodSince] = this.i32[b + W.last] = this.i32[b + W.challengedAt] = NEVER;
    const v4 = this.parse(key);
    // Live before it is indexed: a rehash() that this insert sets off indexes it with the others.
    this.u8[(b + W.marks) * 4 + 3] = F_LIVE | (v4 === STRING ? F_STRING_KEY : 0);
    if (v4 === STRING) { this.strings.set(key, slot); this.stringOf.set(slot, key); }
    else {
      const w = v4 === PREFIX64 ? this.parsed6.get(key)! : null;
      const k = w ? w[1] : v4 | 0, k2 = w ? w[0] : -1;
      this.i32[b + W.key] = k;
      this.i32[b + W.key2] = k2;
      if (this.index(slot, k, k2) > LONG_PROBE) this.rehash();
    }
    this.append(slot);
    h[H.size]++;
    return slot;
  }

  /** How far it walked from the key's home. */
  private index(slot: number, k: number, k2: number): number {
    const idx = this.idx, mask = idx.length - 1;
    let p = this.hash(k, k2), walked = 0;
    while (idx[p] !== 0) { p = (p + 1) & mask; walked++; }
    idx[p] = slot + 1;
    return walked;
  }

  /** New random tables, and every numeric key indexed again under them (keys that met under the old ones part). */
  private rehash(): void {
    this.rehashCount++;
    this.draw();
    this.idx.fill(0);
    this.reindex(this.h[H.used]);
  }

  private draw(): void { for (let i = 0; i < this.tab.length; i++) this.tab[i] = this.random(); }

  private reindex(slots: number): void {
    for (let s = 0; s < slots; s++) {
      const b = s * this.stride;
      if ((this.u8[(b + W.marks) * 4 + 3] & (F_LIVE | F_STRING_KEY)) === F_LIVE) this.index(s, this.i32[b + W.key], this.i32[b + W.key2]);
    }
  }

  /** Takes a slot's key out of the index (backward-shift deletion: no tombstones) and its spilled times out of the map. */
  private release(slot: number): void {
    const b = slot * this.stride;
    if (slot === this.lastSlot) this.lastKey = null;
    if (this.spill.size > 0) for (let w = 0; w < 4; w++) this.spill.delete(b + w);
    const flags = this.u8[(b + W.marks) * 4 + 3];
    this.u8[(b + W.marks) * 4 + 3] = 0;
    if (flags & F_STRING_KEY) {
      this.strings.delete(this.stringOf.get(slot)!);
      this.stringOf.delete(slot);
      return;
    }
    const idx = this.idx, i32 = this.i32, mask = idx.length - 1;
    let p = this.hash(i32[b + W.key], i32[b + W.key2]);
    while (idx[p] !== slot + 1) p = (p + 1) & mask;
    for (let q = (p + 1) & mask; idx[q] !== 0; q = (q + 1) & mask) {
      // An entry may fill the hole unless its home lies cyclically in (p, q].
      const bq = (idx[q] - 1) * this.stride, home = this.hash(i32[bq + W.key], i32[bq + W.key2]);
      if (p <= q ? (home <= p || home > q) : (home <= p && home > q)) { idx[p] = idx[q]; p = q; }
    }
    idx[p] = 0;
  }

  /** Doubles an owned buffer (up to max); nothing when the table is at its size. */
  private grow(): void {
    const cap = this.capacity;
    if (!this.owned || cap >= this.max) return;
    const next = Math.min(this.max, cap * 2);
    const old = this.i32, header = this.h;
    this.layout(new ArrayBuffer(SourceSlots.bytesFor(this.rules, next)), next);
    this.i32.set(old.subarray(0, cap * this.stride));
    this.h.set(header);
    this.h[H.capacity] = next;
    this.reindex(cap);
  }

  // ---- recency (the list runs from head, least recent, to tail, most recent) ---------------------

  private unlink(slot: number): void {
    const i32 = this.i32, b = slot * this.stride, prev = i32[b + W.prev], next = i32[b + W.next];
    if (prev >= 0) i32[prev * this.stride + W.next] = next; else this.h[H.head] = next;
    if (next >= 0) i32[next * this.stride + W.prev] = prev; else this.h[H.tail] = prev;
  }

  private append(slot: number): void {
    const i32 = this.i32, b = slot * this.stride, tail = this.h[H.tail];
    i32[b + W.prev] = tail;
    i32[b + W.next] = -1;
    if (tail >= 0) i32[tail * this.stride + W.next] = slot; else this.h[H.head] = slot;
    this.h[H.tail] = slot;
  }
}
