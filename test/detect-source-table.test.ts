// The compact source table against a plain model of what it replaced (an LRU
// of objects with number fields): random operations on both, every field,
// the size, the eviction count and the recency order compared after each.
// Times cover what the Int32 offsets cannot hold (fractions, weeks apart).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { sourceKey, prefix64Key, prefix64Words } from '../src/listen/source.ts';
import { LruSourceStore, SourceState, RING, UA_SLOTS } from '../src/detect/sources.ts';
import { SourceTable, ipv4 } from '../src/detect/source-table.ts';
import { LONG_PROBE, TABLES } from '../src/detect/source-hash.ts';

interface Model {
  levels: number[]; last: number; trustUntil: number; challengedAt: number; goodSince: number; score: number;
  pages: number; assets: number; domain: string | null; wlVersion: number; whitelisted: boolean; paths: number[]; pathPos: number; uas: number[]; uaPos: number;
}
const fresh = (rules: number): Model => ({
  levels: new Array<number>(rules).fill(0), last: 0, trustUntil: 0, challengedAt: 0, goodSince: 0, score: 0, pages: 0, assets: 0,
  domain: null, wlVersion: -1, whitelisted: false, paths: new Array<number>(RING * 2).fill(0), pathPos: 0, uas: new Array<number>(UA_SLOTS).fill(0), uaPos: 0,
});

/** The former SourceState's ring logic, verbatim but for the User-Agent fingerprint, kept as 16 bits (folded). */
function modelUa(m: Model, h32: number): boolean {
  const h = ((h32 ^ (h32 >>> 16)) & 0xffff) || 1;
  for (let i = 0; i < UA_SLOTS; i++) if (m.uas[i] === h) return false;
  const first = m.uas[0] === 0;
  m.uas[m.uaPos] = h;
  m.uaPos = (m.uaPos + 1) % UA_SLOTS;
  return !first;
}
function modelPath(m: Model, ph: number, kh: number): number {
  for (let i = 0; i < RING * 2; i += 2) {
    if (m.paths[i] === ph) { if (m.paths[i + 1] === kh) return 0; m.paths[i + 1] = kh; return kh !== 0 ? 2 : 0; }
  }
  m.paths[m.pathPos] = ph; m.paths[m.pathPos + 1] = kh;
  m.pathPos = (m.pathPos + 2) % (RING * 2);
  return 1;
}

function same(s: SourceState, m: Model): void {
  expect([...s.levels]).toEqual(m.levels);
  expect([s.last, s.trustUntil, s.challengedAt, s.goodSince, s.score, s.pages, s.assets, s.domain, s.wlVersion, s.whitelisted])
    .toEqual([m.last, m.trustUntil, m.challengedAt, m.goodSince, m.score, m.pages, m.assets, m.domain, m.wlVersion, m.whitelisted]);
}

/** A small deterministic PRNG, so that a failure replays. */
function rng(seed: number) {
  return () => { seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) | 0; return ((seed ^ (seed >>> 13)) >>> 0) / 2 ** 32; };
}

describe('the compact source table', () => {
  it('parses only canonical dotted quads as numbers', () => {
    expect(ipv4('0.0.0.0')).toBe(0);
    expect(ipv4('255.255.255.255')).toBe(2 ** 32 - 1);
    expect(ipv4('10.1.2.3')).toBe(0x0a010203);
    for (const s of ['010.0.0.1', '1.2.3', '1.2.3.4.5', '256.0.0.1', '1..2.3', '1.2.3.', 'a.b.c.d', '2001:db8::/64', '', '1.2.3.04', '1234.1.1.1']) expect(ipv4(s)).toBe(-1);
  });

  it.each([1_700_000_000_000, 0])('behaves as an LRU of plain records through growth, eviction, deletion and clearing (clock from %i)', (start) => {
    const rules = 5, max = 1500; // starts at 1024 records, grows once, then evicts
    const store = new LruSourceStore(max, rules);
    const model = new Map<string, Model>();
    let evicted = 0;
    const rand = rng(7);
    const pool = [
      ...Array.from({ length: 2400 }, (_, i) => `10.${i >> 8}.${i & 255}.${(i * 7) & 255}`),
      ...Array.from({ length: 300 }, (_, i) => `2001:db8:${i.toString(16)}::/64`),
      // /64s whose words are those of IPv4 keys in the pool (low word) or of each other (high word).
      ...Array.from({ length: 50 }, (_, i) => `0:0:${(10 << 8 | (i >> 8)).toString(16)}:${((i & 255) << 8 | ((i * 7) & 255)).toString(16)}::/64`),
      ...Array.from({ length: 50 }, (_, i) => `${i.toString(16)}:1::/64`),
      '::/64', '0.0.0.0', '255.255.255.255', '010.0.0.1', 's', '',
      // Strings, not numbers: other spellings of a /64, and the one /64 whose high word marks an IPv4 key.
      '2001:DB8:1::/64', '2001:db8:1:0::/64', '2001:db8:1::/48', '2001:db8:1::', 'ffff:ffff::/64', 'ffff:ffff:1:2::/64', ':::/64',
    ];
    const mtouch = (k: string): Model => {
      let m = model.get(k);
      if (m) model.delete(k);
      else {
        m = fresh(rules);
        if (model.size >= max) { model.delete(model.keys().next().value!); evicted++; }
      }
      model.set(k, m);
      return m;
    };
    let now = start;
    for (let op = 0; op < 50_000; op++) {
      const k = pool[Math.floor(rand() * rand() * pool.length)];
      const r = rand();
      // The clock: mostly ms steps, sometimes a jump of days (the offsets' base must move along).
      now += rand() < 0.001 ? Math.floor(rand() * 20 * 86_400_000) : Math.floor(rand() * 50);
      if (r < 0.04) { store.delete(k); model.delete(k); continue; }
      if (r < 0.0005) { store.clear(); model.clear(); continue; }
      if (r < 0.1) {
        const s = store.peek(k), m = model.get(k);
        expect(s === undefined).toBe(m === undefined);
        if (s && m) same(s, m);
        continue;
      }
      const s = store.touch(k), m = mtouch(k);
      same(s, m);
      const f = Math.floor(rand() * 12);
      if (f === 0) { const i = Math.floor(rand() * rules), v = rand() * 300; s.levels[i] = v; m.levels[i] = Math.fround(v); }
      else if (f === 1) { s.last = m.last = now; }
      else if (f === 2) { const v = rand() < 0.2 ? now + 0.25 : rand() < 0.2 ? now + 40 * 86_400_000 : now + 3600_000; s.trustUntil = m.trustUntil = v; }
      else if (f === 3) { s.challengedAt = m.challengedAt = rand() < 0.1 ? 0 : now; }
      else if (f === 4) { s.goodSince = m.goodSince = rand() < 0.1 ? 0 : now - Math.floor(rand() * 60 * 86_400_000); }
      else if (f === 5) { const v = rand() * 3; s.score = v; m.score = Math.fround(v); }
      else if (f === 6) { s.pages++; m.pages = Math.min(255, m.pages + 1); s.assets += 7; m.assets = Math.min(255, m.assets + 7); }
      else if (f === 7) { const d = rand() < 0.2 ? null : `d${Math.floor(rand() * 4)}.test`; s.domain = m.domain = d; }
      else if (f === 8) { const v = Math.floor(rand() * 3) + Math.floor(op / 1000); s.wlVersion = m.wlVersion = v; s.whitelisted = m.whitelisted = rand() < 0.5; }
      else if (f === 9) { const h = rand() < 0.5 ? 1 + Math.floor(rand() * 6) : Math.floor(rand() * 2 ** 32) || 1; expect(s.newUserAgent(h)).toBe(modelUa(m, h)); }
      else {
        const ph = rand() < 0.7 ? Math.floor(rand() * 12) * 0x10000001 >>> 0 : Math.floor(rand() * 2 ** 32);
        const kh = rand() < 0.4 ? 0 : Math.floor(rand() * 3) * 0x9e3779b1 >>> 0;
        expect(s.notePath(ph, kh)).toBe(modelPath(m, ph, kh));
      }
      same(s, m);
      if (op % 997 === 0) {
        expect(store.size).toBe(model.size);
        expect(store.evicted).toBe(evicted);
        const order = [...store.entries()];
        expect(order.map(([key]) => key)).toEqual([...model.keys()].reverse());
        for (const [key, st] of order) same(st, model.get(key)!);
      }
    }
    expect(store.size).toBe(model.size);
    expect(store.evicted).toBe(evicted);
    expect(evicted).toBeGreaterThan(1000);
  });

  it('lives in a buffer it is given, at its full size, and refuses one too small', () => {
    const bytes = SourceTable.bytesFor(17, 1000);
    const store = new LruSourceStore(1000, 17, new SharedArrayBuffer(bytes));
    for (let i = 0; i < 1500; i++) store.touch(`10.0.${i >> 8}.${i & 255}`).score = i;
    expect(store.size).toBe(1000);
    expect(store.evicted).toBe(500);
    expect(store.peek('10.0.5.219')?.score).toBe(1499);
    expect(() => new LruSourceStore(1000, 17, new ArrayBuffer(bytes - 4))).toThrow(/needed/);
  });

  it('costs under 195 bytes a source with the 17 default rules', () => {
    const perSource = SourceTable.bytesFor(17, 1_000_000) / 1_000_000;
    expect(perSource).toBeLessThan(195);
  });

  it('keeps an IPv6 peer\'s /64 as two numbers, under the key sourceKey() gives it, and gives that key back', () => {
    // The key as sourceKey() wrote it before the table kept /64s as numbers: what the blacklist and the logs hold.
    const former = (a: string) => `${ipaddr.IPv6.parse(ipaddr.IPv6.parse(a).parts.slice(0, 4).map((p) => p.toString(16)).join(':') + '::').toString()}/64`;
    const t = new SourceTable(3, 64);
    fc.assert(fc.property(fc.ipV6(), (a) => {
      if (a.includes('.')) return; // IPv4-embedded forms: an ::ffff: one is the IPv4 address, tested elsewhere
      const key = sourceKey(a);
      expect(key).toBe(former(a));
      const words = prefix64Words(key);
      expect(words).not.toBeNull();
      if (words![0] === 0xffffffff) return; // reserved space: kept as a string key
      const slot = t.touch(key);
      t.touch('10.0.0.1'); // another source in between: find() below goes through the index, not the last-key shortcut
      expect(t.find(key)).toBe(slot);
      expect(t.keyOf(slot)).toBe(key);
      expect(t.stringKeys).toBe(0);
    }), { numRuns: 2000 });
  });

  // A sender holding an IPv6 /32 chooses the low 32 bits of its /64s freely: enough to pick thousands that share one
  // home position under a fixed hash, so that every lookup walks past all of them.
  const HI = 0x20010db8;
  it('spreads /64s picked to share one home under a fixed hash', () => {
    const t = new SourceTable(3, 4096);
    // The hash the table had before it was keyed: Fibonacci hashing of the two words (8192 positions: >>> 19).
    const fixed = (lo: number, hi: number) => Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 19;
    const keys: string[] = [];
    // lo × 0x9e3779b1 (odd, so invertible mod 2^32) small ⇒ the top 13 bits 0 ⇒ home 0, for each lo below.
    const inv = modInverse(0x9e3779b1), mixHi = Math.imul(HI, 0x85ebca6b);
    for (let i = 0; keys.length < 3000; i++) {
      const lo = (Math.imul(i, inv) ^ mixHi) >>> 0;
      expect(fixed(lo, HI)).toBe(0);
      keys.push(prefix64Key(HI, lo));
    }
    for (const k of keys) t.touch(k);
    expect(t.size).toBe(3000);
    expect(t.stringKeys).toBe(0);
    expect(t.longestRun()).toBeLessThan(64);
    for (const k of keys) expect(t.keyOf(t.find(k))).toBe(k);
  });

  it('draws new tables when keys pile up anyway (tables that got out), and keeps every source', () => {
    let drawn = 0;
    // Tables of zeros to begin with: every key lands on one place, as keys picked by someone who saw the tables
    // would. At its full size from the start (1024 records, it never grows): a growth would index every source
    // again and hide one the rehash left out.
    const t = new SourceTable(3, 1024, undefined, () => (drawn++ < TABLES * 256 ? 0 : (Math.random() * 2 ** 32) | 0));
    const keys = Array.from({ length: 1000 }, (_, i) => prefix64Key(HI, i));
    for (const [n, k] of keys.entries()) {
      t.touch(k);
      // Before the walk passes LONG_PROBE, the keys do pile up (the test's keys are what it says they are).
      if (n === LONG_PROBE - 8) expect(t.longestRun()).toBeGreaterThanOrEqual(LONG_PROBE - 8);
    }
    expect(t.rehashes).toBeGreaterThanOrEqual(1);
    expect(t.longestRun()).toBeLessThan(64);
    // Every source is found where it is (the one whose insert set the rehash off too), none twice.
    for (const k of keys) expect(t.keyOf(t.find(k))).toBe(k);
    expect(t.size).toBe(1000);
    for (const k of keys.slice(0, 500)) t.remove(k);
    expect(t.size).toBe(500);
    for (const k of keys.slice(0, 500)) expect(t.find(k)).toBe(-1);
    // Evicting through all of them (removal walks the index to each one's place).
    for (let i = 0; i < 2000; i++) t.touch(`10.1.${i >> 8}.${i & 255}`);
    for (const k of keys) expect(t.find(k)).toBe(-1);
    expect(t.size).toBe(1024);
  });

  it('walks a few dozen positions at most with a million random sources', () => {
    const t = new SourceTable(1, 1_000_000);
    for (let i = 0; i < 1_000_000; i++) t.touch(i % 2 ? `${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}.${(i >>> 24) + 1}` : prefix64Key((Math.random() * 2 ** 32) >>> 0, i));
    expect(t.size).toBe(1_000_000);
    expect(t.rehashes).toBe(0);
    expect(t.longestRun()).toBeLessThan(LONG_PROBE);
  });
});

/** x with x × a = 1 mod 2^32 (a odd), by Newton's iteration. */
function modInverse(a: number): number {
  let x = a;
  for (let i = 0; i < 5; i++) x = Math.imul(x, 2 - Math.imul(a, x));
  return x;
}
