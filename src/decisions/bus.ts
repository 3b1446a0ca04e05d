// How decisions travel between processes and nodes. A decision (a ban, an
// unban, a whitelist change, a domain's attack state) is made in one place and
// must be in force everywhere within a second; counting stays local. The
// in-process implementation below is what a node alone uses; a shared one
// (worker threads, Redis) implements the same interface, so detection never
// knows where its decisions go.
import type { BanEntry } from './blacklist.ts';
import type { WhitelistEntry } from './lists.ts';

// Every decision carries when it was made (ms, wall clock: nodes compare them): a ban or a whitelist entry its
// `since`, the others their `at`. Where two nodes decided on one address or domain, the later decision stands, also
// when the earlier one reaches Redis last (a node back from a cut). `at` is absent only in what a version before it
// queued or published: such a decision is written as it comes.
export type Decision =
  | { kind: 'ban'; entry: BanEntry }
  | { kind: 'unban'; ip: string; at?: number }
  | { kind: 'whitelist'; entry: WhitelistEntry }
  | { kind: 'unwhitelist'; ip: string; at?: number }
  /** `failing`: its upstream fails (or its queue is crowded) in the attack: the filter is tightened (filter.attack.tighten). */
  | { kind: 'attack'; domain: string; under: boolean; since: number; reason: string | null; at?: number; failing?: boolean };

/** A node under attack on a domain says so again at least this often (with a new `at`): an attack state in Redis
 *  older than a few of these was left by a node that stopped, and a node joining does not take it up. */
export const ATTACK_REFRESH_MS = 60_000;

/** When a decision was made, or null for one that does not say (see Decision). Pure. */
export function decidedAt(d: Decision): number | null {
  switch (d.kind) {
    case 'ban': case 'whitelist': return d.entry.since;
    default: return d.at ?? null;
  }
}

/** What is in force now, for a process or node that (re)joins. */
export interface DecisionSnapshot {
  bans: BanEntry[];
  whitelist: WhitelistEntry[];
  /** Each domain's attack state as last decided in the cluster (a shared bus only). */
  attacks?: { domain: string; under: boolean; since: number; reason: string | null; at?: number }[];
}

export interface DecisionBus {
  /** Hands a decision made here to every other process and node. Never blocks the caller; a bus that cannot
   *  reach its peers keeps the decision and sends it when they are back. */
  publish(d: Decision): void;
  /** Decisions made elsewhere (never the ones published here). */
  subscribe(fn: (d: Decision) => void): void;
  /** What is in force across the cluster (bans not yet expired at `now`). `local`: what this node has in force
   *  from its own store (its bans, its API whitelist); a bus shared with other nodes reconciles it with the
   *  cluster: written back where the cluster never had it or lost it, lifted where the cluster lifted it. */
  snapshot(now: number, local?: DecisionSnapshot): Promise<DecisionSnapshot>;
  /** The challenge secret shared by every node (a browser that passed on one node passes on all). */
  secret(local: Buffer): Promise<Buffer>;
  /** Called with the shared secret when this node takes it up after its start (it could not read it then: the
   *  shared store was out of reach; or the store lost it and another node's stands now). Absent: it never changes. */
  watchSecret?(fn: (secret: Buffer) => void): void;
  /** The TLS session ticket key every node uses in `period` (listen/ticket-keys.ts), `mine` offered when there is
   *  none yet; `mine` when the shared store is out of reach. Absent: a node alone. */
  ticketKey?(period: number, ttlMs: number, mine: Buffer): Promise<Buffer>;
  /** This process lifted these bans early (filter.maxBans): a bus that remembers what is in force forgets them too (so
   *  its memory is bounded as the blacklist's is), and one with processes below it has them lift them as well. Not a
   *  decision for the cluster: each node applies the cap to what it holds. */
  evicted?(ips: string[]): void;
  /** False while the shared store is out of reach (the node keeps protecting on what it knows). */
  readonly healthy: boolean;
  /** Healthy (connected) but what this node decides is not reaching the others (the shared store refuses writes, or
   *  they wait too long): what /healthz names as the reason it is degraded. null or absent: nothing of the kind. */
  readonly writeProblem?: { readonly redis: string } | null;
  /** A bus shared with other nodes: this node's clock minus the shared store's, ms (null until measured). */
  readonly clock?: { readonly offsetMs: number | null; readonly skewed: boolean };
  close(): Promise<void>;
}

/** A node alone: nothing to tell anyone. */
export class LocalBus implements DecisionBus {
  readonly healthy = true;
  publish(): void {}
  subscribe(): void {}
  async snapshot(): Promise<DecisionSnapshot> { return { bans: [], whitelist: [] }; }
  async secret(local: Buffer): Promise<Buffer> { return local; }
  async close(): Promise<void> {}
}
