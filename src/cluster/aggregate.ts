// What the primary shows of its workers as one proxy: their counters added up
// (each worker's are monotonic from its own start, so the primary adds deltas
// per process, and a replaced worker's first report counts whole), and their
// upstream queues summed. Bans and attack mode are the primary's own: every
// ban, wherever decided, is recorded once by its Decisions, and attack mode is
// judged there for the node (node-attacks.ts). A gauge among the counters
// (sources tracked) is the sum of each live worker's last value instead.
import type { AttackState } from '../detect/attack-mode.ts';
import type { Filter, FilterSnapshot } from '../detect/filter.ts';
import type { QueueView } from '../stats/metrics.ts';
import type { WorkerReport } from './protocol.ts';

interface Seen { pid: number | undefined; counters: Record<string, number>; gauges: Record<string, number>; attack: Map<string, AttackState>; queues: Map<string, QueueView> }

/** Counted by the primary alone: bans (recorded once, wherever decided) and attacks (judged there for the node). */
const isBanCounter = (k: string) => k === 'bans' || k === 'bansExpired' || k === 'bansEvicted' || k.startsWith('bans.') || k === 'attacksStarted';
/** What a worker has now, not what it did: it goes down as well as up (a source forgotten), and to nothing with the
 *  worker. Added up as a counter, every drop was counted again as new. */
const GAUGES = new Set(['sourcesTracked']);

export class WorkersView {
  private readonly primary: Filter;
  private readonly seen = new Map<number, Seen>();
  private readonly totals: Record<string, number> = {};
  /** Each domain's queue summed over the workers, as of their last reports. */
  readonly queues = new Map<string, QueueView>();

  constructor(primary: Filter) { this.primary = primary; }

  /** `pid`: the process that sent it. A new process under an index counts from zero: all of its first report is new
   *  (a counter that merely went down would miss a replacement that counted past its predecessor's last value). */
  take(index: number, r: WorkerReport, pid?: number): void {
    const s = this.seen.get(index);
    const last = s && s.pid === pid ? s.counters : {};
    const gauges: Record<string, number> = {};
    for (const [k, v] of Object.entries(r.counters)) {
      if (GAUGES.has(k)) { gauges[k] = v; continue; }
      const before = last[k] ?? 0;
      this.totals[k] = (this.totals[k] ?? 0) + (v >= before ? v - before : v);
    }
    this.seen.set(index, {
      pid,
      counters: r.counters,
      gauges,
      attack: new Map(r.attack ?? []),
      queues: new Map(r.queues.map(([d, active, queued, limit]) => [d, { active, queued, limit: limit ?? 0 }])),
    });
    this.sumQueues();
  }

  /** A worker that died: its gauges go at once (its counters stay in the totals); the sums shown without it. */
  gone(index: number): void {
    const s = this.seen.get(index);
    if (!s) return;
    s.attack.clear();
    s.queues.clear();
    s.gauges = {};
    this.sumQueues();
  }

  private sumQueues(): void {
    this.queues.clear();
    for (const s of this.seen.values()) {
      for (const [d, q] of s.queues) {
        // Each worker learns its own limit on its share of the traffic: the domain's is their sum.
        const sum = this.queues.get(d) ?? { active: 0, queued: 0, limit: 0 };
        this.queues.set(d, { active: sum.active + q.active, queued: sum.queued + q.queued, limit: (sum.limit ?? 0) + (q.limit ?? 0) });
      }
    }
  }

  snapshot(): FilterSnapshot {
    const p = this.primary.snapshot();
    const counters: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.totals)) if (!isBanCounter(k)) counters[k] = v;
    for (const [k, v] of Object.entries(p.counters)) if (isBanCounter(k)) counters[k] = v;
    for (const k of GAUGES) counters[k] = [...this.seen.values()].reduce((n, s) => n + (s.gauges[k] ?? 0), 0);
    // Refused at accept happens here in the primary; refused just after (a ban not yet at the primary) in a worker.
    const refusedHere = this.primary.decisions.blacklist.tally.refused;
    const droppedConnections = refusedHere + (this.totals.droppedConnections ?? 0);
    counters.droppedConnections = droppedConnections;
    // Attack mode is the primary's judgement for the node (node-attacks.ts): the workers follow it.
    return { blacklistSize: p.blacklistSize, underAttack: p.underAttack, droppedConnections, counters };
  }

  /** The domains a worker filters as under attack, as of its last report (for /api/workers). */
  underAttackIn(index: number): string[] {
    return [...(this.seen.get(index)?.attack ?? [])].filter(([, a]) => a.under).map(([d]) => d);
  }

  /** A domain's attack state: the node's, judged by the primary on every worker's seconds. */
  attackState(domain: string): Readonly<AttackState> | undefined { return this.primary.attackState(domain); }
}
