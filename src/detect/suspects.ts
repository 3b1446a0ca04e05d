// When a domain's upstream starts failing (or its queue is crowded) in an
// attack, its most suspicious sources are banned at once rather than when
// their own rules fill: the origin needs the room now. Pure: the caller bans.
import type { CompiledRules } from './rules.ts';
import type { SourceState } from './sources.ts';
import { fills } from './engine.ts';
import { explainScore } from './score.ts';

export interface Suspect { source: string; reason: string; banSeconds: number }

export interface SuspectQuery {
  domain: string;
  /** When the attack began: a source with a history from before it is not a suspect (people behind a NAT are asked
   *  for cookies first; the rules still judge it after). */
  since: number;
  /** The score a suspect reaches. */
  line: number;
  /** At most this many, the highest scores first. */
  count: number;
  rules: CompiledRules;
  now: number;
  /** People behind the source's address (SharedAddresses.factor). */
  people(source: string): number;
  whitelisted(source: string, s: SourceState): boolean;
}

export function suspects(sources: Iterable<[string, SourceState]>, q: SuspectQuery): Suspect[] {
  const found: { source: string; s: SourceState }[] = [];
  for (const [source, s] of sources) if (s.domain === q.domain && s.score >= q.line && !(s.goodSince > 0 && s.goodSince < q.since) && !q.whitelisted(source, s)) found.push({ source, s });
  found.sort((a, b) => b.s.score - a.s.score);
  const r = q.rules;
  return found.slice(0, q.count).map(({ source, s }) => {
    const f = fills(s.levels, s.last, q.now, r, q.people(source));
    // The ban lasts as long as the rule that weighs most in the score would have banned it for.
    let top = 0;
    for (let i = 1; i < f.length; i++) if (r.weight[i] * Math.min(1, f[i]) > r.weight[top] * Math.min(1, f[top])) top = i;
    return { source, reason: `suspect while the upstream fails or is crowded: ${explainScore(s.score, q.line, f, r)}`, banSeconds: r.rules[top]?.banSeconds ?? 1800 };
  });
}
