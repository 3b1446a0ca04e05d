// The combined score: several weak signals add up, so that a bot that keeps
// every single bucket under its capacity is still caught. The engine computes
// the number on the hot path; this module judges it and explains it.
import type { CompiledRules } from './rules.ts';

/** The line a score must reach; lower while the domain's upstream is failing (the filter tightens). */
export function scoreLine(threshold: number, upstreamFailing: boolean, tighten: number): number {
  return upstreamFailing ? threshold * tighten : threshold;
}

/** "score 1.12 >= 1: no-assets 0.83, crawl 0.61, flood 0.40" — the reason kept with a score ban. */
export function explainScore(score: number, line: number, fills: number[], rules: CompiledRules): string {
  const parts = fills
    .map((f, i) => ({ name: rules.rules[i].name, f, w: rules.weight[i] * Math.min(1, f) }))
    .filter((p) => p.w > 0.01)
    .sort((a, b) => b.w - a.w)
    .slice(0, 4)
    .map((p) => `${p.name} ${p.f.toFixed(2)}`);
  return `score ${score.toFixed(2)} >= ${round(line)}: ${parts.join(', ')}`;
}

/** Reason for a single rule's overflow: which bucket, how full, how fast it leaks. */
export function explainOverflow(rule: CompiledRules['rules'][number], fill: number): string {
  return `${rule.name} (${rule.label}): ${round(fill * rule.capacity)} > ${rule.capacity}, leak ${rule.leakPerSecond}/s`;
}

const round = (n: number) => Math.round(n * 100) / 100;
