// Builds the filter's part of the object graph: the store, the decisions, the
// challenge and the detector, on one clock.
import { createSecretKey } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { Db } from '../store/db.ts';
import type { Logger } from '../log.ts';
import type { DecisionBus } from '../decisions/bus.ts';
import { SqliteFilterStore, type FilterStore } from '../store/filter-store.ts';
import { banPolicy, Decisions } from '../decisions/decisions.ts';
import { CookieChallenge } from '../challenge/cookie.ts';
import { Detector, type DetectorDeps } from '../detect/detector.ts';
import { Filter } from '../detect/filter.ts';

export interface FilterDeps {
  /** The embedded store, when no `store` is given (a worker process has none: its primary stores for it). */
  db?: Db;
  log: Logger;
  /** The clock of every decision (tests pass a fake one). */
  now?: () => number;
  store?: FilterStore;
  bus?: DecisionBus;
  /** The challenge secret (a shared one, when several nodes must accept each other's cookies). */
  secret?: Buffer;
  /** Whether a domain's origin was saturated over the last second (OriginGuard.takeSaturated); null: no adaptive limit. */
  saturated?: (domain: string, now: number) => boolean | null;
  /** Whether a source takes over its share of a domain's origin (OriginGuard.heavy). */
  heavy?: (domain: string, source: string) => boolean;
  /** What each domain's endpoints usually answer in (OriginGuard.endpointsOf), kept across a restart. */
  endpointsOf?: (domain: string) => [string, number][] | undefined;
  /** A worker of several: each domain's second goes to the primary, which judges attack mode for the node. */
  attackSamples?: DetectorDeps['attackSamples'];
}

export function createFilter(config: Config, deps: FilterDeps): Filter {
  const now = deps.now ?? Date.now;
  const store = deps.store ?? new SqliteFilterStore(deps.db!);
  const f = config.filter;
  const decisions = new Decisions(
    banPolicy(f), f.whitelist, { store, log: deps.log, bus: deps.bus }, now());
  // The key is imported once: the HMAC runs on the request path of every untrusted source under attack.
  const secret = createSecretKey(deps.secret ?? store.secret());
  const challenge = new CookieChallenge(secret, config.filter.challenge.cookieName, { maxNetworks: config.filter.challenge.maxNetworksPerToken, maxTokens: config.filter.maxSources });
  // The shared secret taken up later: cookies this node signed until then still pass for as long as they were issued
  // for (the trust time as configured at start), so that nobody who passed here is challenged again for the change.
  const graceMs = f.challenge.trustSeconds * 1000 * f.timeScale;
  deps.bus?.watchSecret?.((s) => challenge.setSecret(createSecretKey(s), now(), graceMs));
  const detector = new Detector(config, { decisions, challenge, store, log: deps.log, now, saturated: deps.saturated, heavy: deps.heavy, attackSamples: deps.attackSamples, endpointsOf: deps.endpointsOf });
  decisions.watch({ onRemoteAttack: (domain, under, since, reason, at, failing) => detector.attacks.remoteAttack(domain, under, since, reason, at, failing) });
  return new Filter({ detector, decisions, store, log: deps.log, now, mode: f.mode, tokens: challenge.spread });
}
