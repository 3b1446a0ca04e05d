// A worker's links to its primary, behind the interfaces the filter already
// has: the DecisionBus (a ban decided here goes to the primary, which records
// it, tells Redis and every other worker; what was decided elsewhere comes
// back) and the FilterStore (the primary's store is the only writer: a worker
// reads what it was given at start and sends its writes up).
import type { Decision, DecisionBus, DecisionSnapshot } from '../decisions/bus.ts';
import type { BanEntry } from '../decisions/blacklist.ts';
import type { WhitelistEntry } from '../decisions/lists.ts';
import type { OffenderRecord } from '../decisions/ban-time.ts';
import type { FilterStore, LearnedDomain } from '../store/filter-store.ts';
import { scaleLearned, type FromWorker, type WorkerInit } from './protocol.ts';

export type SendUp = (m: FromWorker) => void;

export class WorkerBus implements DecisionBus {
  readonly healthy = true;
  private readonly send: SendUp;
  private readonly subscribers: ((d: Decision) => void)[] = [];
  private readonly secretWatchers: ((s: Buffer) => void)[] = [];
  constructor(send: SendUp) { this.send = send; }
  publish(d: Decision): void { this.send({ t: 'decision', d }); }
  subscribe(fn: (d: Decision) => void): void { this.subscribers.push(fn); }
  /** A decision the primary passed down (made in another worker, by an operator, or on another node). */
  deliver(d: Decision): void { for (const fn of this.subscribers) fn(d); }
  // What was in force when this worker started came with its init (WorkerStore): nothing more to join.
  async snapshot(): Promise<DecisionSnapshot> { return { bans: [], whitelist: [] }; }
  async secret(local: Buffer): Promise<Buffer> { return local; }
  watchSecret(fn: (s: Buffer) => void): void { this.secretWatchers.push(fn); }
  /** The challenge secret the primary passed down (the nodes' shared one, taken up after the start). */
  deliverSecret(s: Buffer): void { for (const fn of this.secretWatchers) fn(s); }
  async close(): Promise<void> {}
}

export class WorkerStore implements FilterStore {
  private readonly init: WorkerInit;
  private readonly send: SendUp;
  constructor(init: WorkerInit, send: SendUp) { this.init = init; this.send = send; }
  loadBans(now: number): BanEntry[] { return this.init.bans.filter((b) => b.expiresAt > now); }
  loadWhitelist(): WhitelistEntry[] { return this.init.whitelist; }
  loadOffenders(): Map<string, OffenderRecord> { return new Map(this.init.offenders); }
  // The store holds the node's rate baseline; this worker sees its share of the requests (scaleLearned).
  // Whether a domain is under attack is the node's (init.attacks, then the primary's word), not what was saved.
  loadLearned(): Map<string, LearnedDomain> { return new Map(this.init.learned.map(([d, l]) => [d, scaleLearned({ ...l, attack: { ...l.attack, under: false } }, 1 / this.init.workers)])); }
  secret(): Buffer { return Buffer.from(this.init.secret, 'base64'); }
  // Bans and the whitelist travel as decisions on the bus; the primary stores them once.
  putBan(): void {}
  deleteBan(): void {}
  putWhitelist(): void {}
  deleteWhitelist(): void {}
  // A repeat offender's record is what makes its next ban longer: it must survive this worker.
  putOffender(ip: string, r: OffenderRecord): void { this.send({ t: 'offender', ip, r }); }
  putLearned(domain: string, l: LearnedDomain): void { this.send({ t: 'learned', domain, l: scaleLearned(l, this.init.workers) }); }
  flush(): void {}
  pruneOffenders(): void {}
}
