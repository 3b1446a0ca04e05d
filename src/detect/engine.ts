// Runs the detector rules over one source's buckets. Pure: levels in, levels
// and a verdict out, no clock, no I/O. Every rule leaks lazily from the
// source's last event, so an idle source costs nothing and one event costs a
// loop over the (dozen or so) rules, with no allocation.
import { EVENTS, type CompiledRules } from './rules.ts';

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
export function applyEvents(levels: Levels, last: number, now: number, pending: Float64Array, rules: CompiledRules, out: Verdict, at = 0): void {
  const dt = now > last ? now - last : 0;
  let score = 0, top = -1, topPart = 0, overflow = -1, overflowFill = 1;
  for (let r = 0; r < rules.count; r++) {
    let level = levels[at + r] - dt * rules.leakPerMs[r];
    if (level < 0) level = 0;
    level += pending[rules.ruleEvent[r]];
    levels[at + r] = level;
    const fill = level / rules.capacity[r];
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

/** Current fill of each rule's bucket, leaked to `now` (for reasons and suspects; not on the hot path). */
export function fills(levels: Levels, last: number, now: number, rules: CompiledRules): number[] {
  const dt = now > last ? now - last : 0;
  return rules.rules.map((_, r) => Math.max(0, levels[r] - dt * rules.leakPerMs[r]) / rules.capacity[r]);
}
