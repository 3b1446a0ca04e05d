// Where a source's key goes in the source table's index (source-slots.ts).
//
// The index is open addressing with linear probing: a lookup walks from its
// key's home position to the first empty one. With a fixed hash function, a
// sender holding a large IPv6 block could pick /64s that all share one home,
// and every lookup of every source near it would walk all of them: an attack on
// the filter's CPU that costs the attacker nothing but addresses it has. So the
// hash is simple tabulation (Zobrist; Pătraşcu and Thorup, "The Power of Simple
// Tabulation Hashing", 2011): each byte of the key picks a word from its own
// table of random words, drawn per source table, and the words are XORed. No
// one who has not seen the tables can pick keys that meet, and, unlike
// multiply-shift, it keeps linear probing's expected cost constant whatever the
// keys are, sequential blocks included (multiply-shift, tried second, packs an
// evenly stepped block of keys into dense tracks for a small share of
// multipliers). It costs 4 loads from an 8 KiB table a word, about what the
// fixed Fibonacci hash cost (Murmur3's finaliser, tried first, cost 1.10-1.20×
// per new source in bench/detector-micro.ts). Should keys pile up anyway, the
// table draws new tables and indexes again.

/** Tables of 256 random words: one per byte of a key's two 32-bit words. */
export const TABLES = 8;

/** An insert that walks further than this from its key's home has met keys chosen to collide, and the index is
 *  rebuilt on new random tables. Random keys at the index's load (at most half full) walk a few dozen at the very worst. */
export const LONG_PROBE = 128;

/** The longest run of occupied positions (0 = empty) in an index, a run that wraps from the end to the start
 *  counted whole: the most any lookup can walk. */
export function longestRun(idx: Int32Array): number {
  let longest = 0, run = 0, first = -1;
  for (let p = 0; p < idx.length; p++) {
    if (idx[p] !== 0) { run++; continue; }
    if (first < 0) first = run;
    longest = Math.max(longest, run);
    run = 0;
  }
  return first < 0 ? idx.length : Math.max(longest, run + first);
}
