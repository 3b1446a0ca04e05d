// Where a source's key goes in the source table's index (source-slots.ts).
//
// The index is open addressing with linear probing: a lookup walks from its
// key's home position to the first empty one. With a fixed hash function, a
// sender holding a large IPv6 block could pick /64s that all share one home,
// and every lookup of every source near it would walk all of them: an attack on
// the filter's CPU that costs the attacker nothing but addresses it has. So the
// hash is multiply-shift with secret multipliers (Dietzfelbinger et al.: odd
// 32-bit numbers drawn at random per table, one per word of a /64's two): two
// given keys share a home with probability about 2 in the index's size, so no
// one who does not know the multipliers can pick keys that meet. It costs one
// multiplication a word, as the fixed Fibonacci hash it replaces did (Murmur3's
// finaliser, tried first, cost a tenth more per new source in
// bench/detector-micro.ts). Should keys pile up anyway (a multiplier that
// spreads some pattern badly, or one that got out), the table draws new ones
// and indexes again.

/** An insert that walks further than this from its key's home has met keys chosen to collide, and the index is
 *  rebuilt on a new seed. Random keys at the index's load (at most half full) walk a few dozen at the very worst. */
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
