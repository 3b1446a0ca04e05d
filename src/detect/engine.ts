// Runs the detector rules over one source's buckets. Pure: levels in, levels
// and a verdict out, no clock, no I/O. Every rule leaks lazily from the
// source's last event, so an idle source costs nothing and one event costs a
// loop over the (dozen or so) rules, with no allocation.
//
// People behind one address (a NAT): the rules measure one person, so for a
// source that stands for `people` of them every bucket is that many times
// larger and leaks that many times faster — at judgment, not when events are
// counted, so an address recognised as a NAT only now (its people came back
// with their trust cookies) is judged by what it is, not by what its levels
// reached while it looked like one client. Events no person produces (slow or
// malformed requests, oversized bodies, ignored challenges) are never shared.
import { EVENTS, EVENT_INDEX, type CompiledRules } from './rules.ts';

const PER_CLIENT = new Uint8Array(EVENTS.length);
for (const e of ['slow', 'badRequest', 'oversizedBody', 'challengeIgnored'] as const) PER_CLIENT[EVENT_INDEX[e]] = 1;

/** How many times rule r's bucket is scaled for a source of `people` people. */
export const scaleOf = (rules: CompiledRules, r: number, people: number): number => (people > 1 && PER_CLIENT[rules.ruleEvent[r]] === 0 ? people : 1);

/** Reused by the caller: the engine writes into it instead of allocating. */
export interface Verdict {
  /** Index of the overflowing rule (the fullest one), or -1. */
  overflow: number;
  /** Combined score: sum over rules of weight × bucket fill (fill capped at 1). */
  score: number;
  /** Index of the rule contributing most to the score, or -1. */
  top: number;
}

export const newVerdict = (): Verdict => ({ overflow: -1, score: 0, top: -1 });

/** Event weights gathered for one evaluation (indexed like EVENTS). */
export const newPending = (): Float64Array => new Float64Array(EVENTS.length);

/** A source's bucket levels: its record's Float32 words in the source table, from an offset. */
export type Levels = { [i: number]: number };

/**
 * Leaks every bucket by the time since `last`, adds the pending event weights
 * to the rules that count them, then judges. Clears `pending`. The levels are
 * levels[at .. at + rules.count): read in place in the source table, no view made.
 */
export function applyEvents(levels: Levels, last: number, now: number, pending: Float64Array, rules: CompiledRules, out: Verdict, people = 1, at = 0): void {
  const dt = now > last ? now - last : 0;
  let score = 0, top = -1, topPart = 0, overflow = -1, overflowFill = 1;
  for (let r = 0; r < rules.count; r++) {
    const k = people > 1 ? scaleOf(rules, r, people) : 1;
    let level = levels[at + r] - dt * rules.leakPerMs[r] * k;
    if (level < 0) level = 0;
    level += pending[rules.ruleEvent[r]];
    // An event may take back (a found answer against the misses): never below empty either.
    if (level < 0) level = 0;
    levels[at + r] = level;
    const fill = level / (rules.capacity[r] * k);
    if (fill > overflowFill) { overflow = r; overflowFill = fill; }
    const part = rules.weight[r] * (fill < 1 ? fill : 1);
    score += part;
    if (part > topPart) { top = r; topPart = part; }
  }
  pending.fill(0);
  out.overflow = overflow;
  out.score = score;
  out.top = top;
}

/** The fullest overflowing rule that `enforcedNow` accepts, or -1 (levels already leaked to now by applyEvents). Off the hot path. */
export function enforcedOverflow(levels: Levels, rules: CompiledRules, people: number, enforcedNow: (r: number) => boolean): number {
  let best = -1, bestFill = 1;
  for (let r = 0; r < rules.count; r++) {
    const fill = levels[r] / (rules.capacity[r] * scaleOf(rules, r, people));
    if (fill > bestFill && enforcedNow(r)) { best = r; bestFill = fill; }
  }
  return best;
}

/** Current fill of each rule's bucket, leaked to `now` (for reasons and suspects; not on the hot path). */
export function fills(levels: Levels, last: number, now: number, rules: CompiledRules, people = 1): number[] {
  const dt = now > last ? now - last : 0;
  return rules.rules.map((_, r) => { const k = scaleOf(rules, r, people); return Math.max(0, levels[r] - dt * rules.leakPerMs[r] * k) / (rules.capacity[r] * k); });
}
