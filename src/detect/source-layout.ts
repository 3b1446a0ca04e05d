// The source table's record and header layout (source-slots.ts keeps the
// records; source-table.ts reads and writes their values).

/** Record layout, in 4-byte words. The path and User-Agent rings and the levels are Int32/Float32 arrays inside it. */
export const W = {
  trustUntil: 0, goodSince: 1, last: 2, challengedAt: 3, score: 4, prev: 5, next: 6,
  /** The key: an IPv4 address with key2 = -1, or an IPv6 /64's low and high 32 bits (ffff:ffff::/64, the one /64
   *  whose high word is -1, is a string key: reserved space that no peer has). */
  key: 7,
  /** Bytes: domain id (u16 at +0), pages (u8, +2), assets (u8, +3); both counts saturate at 255 (only 0, 1, 2 matter). */
  counts: 8,
  /** Bytes: whitelist version (u16 at +0, relative to the table's base; 0 = none), ring positions (+2), flags (+3). */
  marks: 9,
  key2: 10,
  /** Path ring: 8 × (path hash, query keys hash); User-Agent ring: 4 × u16 fingerprint (0: empty). */
  paths: 11, uas: 27, levels: 29,
} as const;
export const F_WHITELISTED = 1;
export const F_STRING_KEY = 2;
export const F_LIVE = 4;
/** The newest path of the ring was a miss (404/410) counted against the source (SourceState.lastMissed). */
export const F_LAST_MISSED = 8;

/** Time offsets meaning "0" (never), and "see the spill map" (source-table.ts). */
export const NEVER = -0x80000000;
export const SPILLED = -0x7fffffff;
export const HEADER_WORDS = 16;
/** Header (Int32 words; the time base and the eviction count are Float64 at words 0 and 2). */
export const H = { head: 4, tail: 5, free: 6, used: 7, size: 8, capacity: 9, wlBase: 10, timeSet: 11 } as const;

export const indexSize = (capacity: number) => 2 ** Math.max(4, Math.ceil(Math.log2(capacity * 2)));
