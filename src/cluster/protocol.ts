// Several worker processes, one proxy (SPEC §9). The primary process accepts
// every connection, refuses banned sources at accept (its BlockList), and hands
// each socket to the worker that owns its source: a source (an IPv4 address, an
// IPv6 /64) is always judged by one worker, so its history, scores, trust and
// per-source caps are exact without any shared table. Workers tell the primary
// what they decide (bans, attack mode) and what they counted; the primary owns
// the store, Redis, the admin API and the totals, and tells every worker what
// was decided anywhere. This file is the messages and the pure parts.
import type { Config } from '../config/schema.ts';
import type { Decision } from '../decisions/bus.ts';
import type { BanEntry } from '../decisions/blacklist.ts';
import type { WhitelistEntry } from '../decisions/lists.ts';
import type { OffenderRecord } from '../decisions/ban-time.ts';
import type { LearnedDomain } from '../store/filter-store.ts';
import type { AttackState, NodeAttack, Sample } from '../detect/attack-mode.ts';

/** What a (re)started worker starts from: what is in force and what was learned, as the primary's store has it. */
export interface WorkerInit {
  index: number;
  workers: number;
  config: Config;
  bans: BanEntry[];
  whitelist: WhitelistEntry[];
  offenders: [string, OffenderRecord][];
  learned: [string, LearnedDomain][];
  /** The challenge secret, base64: a cookie issued by one worker (or node) passes on every other. */
  secret: string;
  /** The secret in use before the node took up the shared one, while the cookies it signed still pass (until, ms). */
  previousSecret?: { key: string; until: number };
  /** The TLS session ticket key in use, base64 (listen/ticket-keys.ts): a replaced worker resumes what the one it
   *  replaces sealed. */
  ticketKey: string;
  /** Each upstream's health by id, as the primary keeps it (Upstreams.healthById). */
  health: [string, boolean][];
  /** Domains the node filters as under attack now (found by another worker, or on another node): a replaced worker
   *  filters them from its start, as the worker it replaces did. */
  attacks: ({ domain: string } & NodeAttack)[];
  /** The files the config names, as the primary read them ([path, base64]: config/files.ts). */
  files: [string, string][];
  /** The challenge tokens the node found over-shared (TokenSpread): a replaced worker refuses them from its start. */
  revokedTokens: string[];
}

/** One worker's counts since its last report (statistics deltas) and its state now (gauges). */
export interface WorkerReport {
  domains: { domain: string; t: number; c: number[] }[];
  globals: { t: number; g: number[] }[];
  /** The filter's monotonic counters (they restart at 0 with the worker: the primary adds up deltas). */
  counters: Record<string, number>;
  attack: [string, AttackState][];
  /** domain, in flight, waiting, the limit the worker's queue holds it to now */
  queues: [string, number, number, number][];
  requests: number;
  /** The worker's resident memory and V8 heap in use, bytes (for /api/workers). */
  memory: { rss: number; heapUsed: number };
}

export type ToWorker =
  | { t: 'init'; init: WorkerInit }
  /** A connection for the listener at this index (plain listeners first, then TLS): the socket rides along. */
  | { t: 'conn'; l: number }
  | { t: 'decision'; d: Decision }
  /** With the upstreams' health after the reload: one the primary rebuilt starts healthy where a worker kept its own. */
  | { t: 'reload'; config: Config; health: [string, boolean][]; files: [string, string][] }
  /** An upstream went down or came back (the primary keeps the node's state; upstream/health.ts). */
  | { t: 'health'; id: string; healthy: boolean }
  /** The TLS session ticket key changed (base64). */
  | { t: 'tickets'; key: string }
  /** The node's attack state of a domain changed (the primary judges it on every worker's seconds, or joined another
   *  node's), or its upstream just started failing in the attack (`suspects`: each worker bans its worst sources). */
  | { t: 'attack'; domain: string; a: NodeAttack }
  /** The challenge secret changed: the nodes' shared one, taken up after the start (base64). */
  | { t: 'secret'; key: string }
  /** A challenge token the node found used from too many networks (over all its workers): refused from now on. */
  | { t: 'revoke'; id: string }
  | { t: 'collect'; id: number }
  /** A repeat offender's record, as a worker sent it up: the others keep it too (Decisions.adoptOffender). */
  | { t: 'offender'; ip: string; r: OffenderRecord }
  /** Worker `index` was replaced and is ready: the connections of its sources taken here meanwhile are let go. */
  | { t: 'home'; index: number }
  | { t: 'stop' };

export type FromWorker =
  | { t: 'ready' }
  | { t: 'failed'; error: string }
  | { t: 'decision'; d: Decision }
  | { t: 'offender'; ip: string; r: OffenderRecord }
  /** What this worker's requests met at an upstream: run lengths of equal outcomes, alternating (OutcomeRuns). */
  | { t: 'upstream'; id: string; firstOk: boolean; runs: number[] }
  | { t: 'learned'; domain: string; l: LearnedDomain }
  | { t: 'report'; id: number; r: WorkerReport }
  /** A challenge token's client id seen from a network for the first time in this worker (TokenSpread.onNetwork). */
  | { t: 'token'; id: string; net: string }
  /** Each domain's last second of traffic (attack-mode.ts Sample): the primary judges attack mode on their sum. */
  | { t: 'samples'; s: [string, Sample][] }
  | { t: 'stopped' };

/** FNV-1a of the source key: the same source goes to the same worker index for the life of the process. Pure. */
export function shardOf(source: string, workers: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < source.length; i++) { h ^= source.charCodeAt(i); h = Math.imul(h, 0x01000193); }
  return (h >>> 0) % workers;
}

/**
 * The config a worker runs: limits that bound the whole process (the POST budget, a domain's upstream ceiling and
 * queue, the upstream connection pool, the sources remembered) are shared out between the workers, so that N
 * workers together hold what one process would. Per-source limits stay as they are: a source lives in one worker.
 * Attack mode's thresholds stay whole: the primary judges it on the sum of the workers' seconds. The adaptive
 * limit's floor and start are shared out too: each worker learns its own limit against the same origin, and unshared, N
 * workers would hold it to at least N × minLimit requests at once (128 on 16 cores, for an origin of 8 slots):
 * the limit would never bind, and nothing would queue in front of the origin, where people go first. And the
 * newcomers' slice: each worker's sources without a history are its share of the node's. And the suspects banned when
 * the upstream starts failing: worker `index` bans its share of filter.attack.suspects (its own worst sources; the
 * shares add up to the count exactly, where rounding up would have each of 16 workers ban one for a count of 1). Pure.
 */
export function workerConfig(c: Config, workers: number, index = 0): Config {
  const share = (v: number) => (v > 0 ? Math.max(1, Math.ceil(v / workers)) : v);
  const suspects = Math.floor(c.filter.attack.suspects / workers) + (index < c.filter.attack.suspects % workers ? 1 : 0);
  return {
    ...c,
    demo: { ...c.demo, enabled: false },
    upstream: { ...c.upstream, maxConnections: share(c.upstream.maxConnections) },
    limits: {
      // Never below one largest body (a chunked one reserves that much): a worker takes any upload one process
      // would, so on many cores the node's total may pass the budget, by at most a body per worker.
      ...c.limits, postBudgetBytes: Math.max(share(c.limits.postBudgetBytes), Math.min(c.limits.postBudgetBytes, c.limits.maxBodyBytes)), maxQueued: share(c.limits.maxQueued),
      adaptive: { ...c.limits.adaptive, minLimit: share(c.limits.adaptive.minLimit), initialLimit: share(c.limits.adaptive.initialLimit) },
    },
    filter: {
      ...c.filter, maxSources: share(c.filter.maxSources), attack: { ...c.filter.attack, suspects },
      fairShare: { ...c.filter.fairShare, newcomerSources: c.filter.fairShare.newcomerSources / workers },
    },
    domains: c.domains.map((d) => ({ ...d, maxInflight: share(d.maxInflight) })),
  };
}

/**
 * What a worker learned of a domain, as the node's (`factor` = workers) or back as one worker's share (1 / workers):
 * a worker sees its share of the domain's requests, so its rate baseline is the node's divided by the workers. The
 * store keeps the node's, so that a restart with another `workers` count (or one process) judges the rate against
 * the right baseline. Nothing else learned is a rate (the latency is the origin's, the same in every worker). Pure.
 */
export function scaleLearned(l: LearnedDomain, factor: number): LearnedDomain {
  return { ...l, attack: { ...l.attack, baselineRps: l.attack.baselineRps * factor } };
}
