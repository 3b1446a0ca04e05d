// The primary's side of attack mode on a node of several workers: it gathers
// each domain's seconds from every worker (attack-rounds.ts), steps the node's
// attack state on their sum with its own detector (as a process alone steps
// its own), and tells the workers every change: they filter by the node's
// state, never by the share of the traffic they see. Another node's attack,
// joined here, is told the same way. What the node learned of a domain's
// traffic (its rate and latency baselines) is this judge's, stored with what
// a worker learned of the rest.
import type { Filter } from '../detect/filter.ts';
import { saveAttack, type NodeAttack, type Sample } from '../detect/attack-mode.ts';
import type { LearnedDomain } from '../store/filter-store.ts';
import { AttackRounds } from './attack-rounds.ts';

export class NodeAttacks {
  private readonly filter: Filter;
  private readonly broadcast: (domain: string, a: NodeAttack) => void;
  private readonly rounds = new AttackRounds();
  /** What each worker was last told of a domain (a change is told once). */
  private readonly told = new Map<string, string>();

  constructor(filter: Filter, broadcast: (domain: string, a: NodeAttack) => void) { this.filter = filter; this.broadcast = broadcast; }

  /** A worker's seconds, by domain. */
  samples(worker: number, ss: [string, Sample][], now: number): void {
    for (const [domain, s] of ss) {
      const node = this.rounds.add(worker, domain, s, now);
      if (node) this.judge(domain, node, now);
    }
  }

  /** Rounds a worker left open too long (it died or lags): judged on what came. Called by the primary's tick. */
  due(now: number): void {
    for (const [domain, node] of this.rounds.due(now)) this.judge(domain, node, now);
  }

  private judge(domain: string, node: Sample, now: number): void {
    const step = this.filter.detector.attacks.step(domain, node, now);
    this.tell(domain, step.failingStarted);
  }

  /** Tells the workers the node's state of the domain when it changed; `suspects`: the upstream just started failing
   *  in the attack (each worker bans the worst of its own sources; told even when nothing else changed). */
  tell(domain: string, suspects: boolean): void {
    const st = this.filter.attackState(domain);
    if (!st) return;
    const a: NodeAttack = { under: st.under, since: st.since, reason: st.under ? st.reason : '', failing: st.upstreamFailing, suspects };
    const key = `${a.under}|${a.since}|${a.reason}|${a.failing}`;
    if (!suspects && this.told.get(domain) === key) return;
    this.told.set(domain, key);
    this.broadcast(domain, a);
  }

  /** The domains under attack now: what a (re)started worker filters from its start. */
  underAttack(): ({ domain: string } & NodeAttack)[] {
    const out: ({ domain: string } & NodeAttack)[] = [];
    for (const [domain, k] of this.filter.detector.knowledge.entries()) {
      const st = k.traffic.state;
      if (st.under) out.push({ domain, under: true, since: st.since, reason: st.reason, failing: st.upstreamFailing, suspects: false });
    }
    return out;
  }

  /** What a worker learned of a domain, with the node's attack baselines (judged here) in place of its own. */
  learned(domain: string, l: LearnedDomain): LearnedDomain {
    const k = this.filter.detector.knowledge.peek(domain);
    return k ? { ...l, attack: saveAttack(k.traffic.state) } : l;
  }
}
