// What the detector gives the flow (its verdict), what it is built with, and
// the durations it judges by.
import type { Logger } from '../log.ts';
import type { Decisions } from '../decisions/decisions.ts';
import type { Challenge } from '../challenge/challenge.ts';
import type { Answer } from '../respond/reply.ts';
import type { FilterStore } from '../store/filter-store.ts';
import type { Sample } from './attack-mode.ts';

export type Verdict = { kind: 'pass' } | { kind: 'drop' } | { kind: 'challenge'; answer: Answer } | { kind: 'refuse'; answer: Answer }; // refuse: drop, after a 429
export const PASS: Verdict = { kind: 'pass' };
export const DROP: Verdict = { kind: 'drop' };

/** Client errors that mean "too slow" (slowloris; a reader cut by the send deadline after its request was observed);
 *  those from the parser mean "not HTTP"; the rest (resets) are ordinary. */
export const SLOW_READER = 'SLOW_READER';
export const SLOW_CODES = new Set(['HPE_HEADERS_TIMEOUT', 'ERR_HTTP_REQUEST_TIMEOUT', SLOW_READER]);
/** How often what was learned of each domain's traffic is saved (and on close): a crash loses at most this much learning. */
export const LEARNED_SAVE_MS = 60_000;
/** A browser follows the challenge's 302 within this; until then the source's other newcomers ignored nothing. */
export const CHALLENGE_GRACE_MS = 1000;
/** How long, from an attack's start, a source with a history is not banned by attack rules while its people are counted. */
export const NAT_GRACE_MS = 15_000;

export interface DetectorDeps {
  decisions: Decisions;
  challenge: Challenge;
  store: FilterStore;
  log: Logger;
  now: () => number;
  /** Whether the domain's origin was saturated over the last second (its adaptive limit); null: it has none. */
  saturated?: (domain: string, now: number) => boolean | null;
  /** The source takes over its share of the domain's origin time (OriginGuard.heavy): no member of a crowd. */ heavy?: (domain: string, source: string) => boolean;
  /** A worker of several: each domain's second goes to the primary, which steps attack mode for the node. */
  attackSamples?: (domain: string, s: Sample) => void;
  /** What the domain's endpoints usually answer in (OriginGuard.endpointsOf), saved with what detection learned. */
  endpointsOf?: (domain: string) => [string, number][] | undefined;
}
