// Attack mode of every domain over time: once a second each domain's counts
// step its state (attack-mode.ts), and once a minute what was learned is
// queued for the store. In a worker of several, the seconds go to the
// primary instead, which judges the node's domain on all the workers' seconds
// (cluster/attack-rounds.ts) and tells each worker the outcome (nodeAttack).
import type { Config } from '../config/schema.ts';
import type { Knowledge } from './knowledge.ts';
import type { Counters } from './counters.ts';
import type { DetectorDeps } from './verdict.ts';
import { LEARNED_SAVE_MS } from './verdict.ts';
import { ATTACK_STALE_MS, joinRemoteAttack, stepAttack, type NodeAttack, type Sample, type Step } from './attack-mode.ts';

export interface DomainAttacksDeps extends DetectorDeps {
  knowledge: Knowledge;
  counters: Counters;
  filter(): Config['filter'];
  /** Bans the domain's most suspicious sources (its upstream started failing in an attack). */
  banSuspects(domain: string, now: number): void;
}

export class DomainAttacks {
  private readonly d: DomainAttacksDeps;
  private lastStep: number;
  private lastLearnedSave: number;

  constructor(d: DomainAttacksDeps) { this.d = d; this.lastStep = this.lastLearnedSave = d.now(); }

  /** Steps attack mode once a second and saves what was learned once a minute. Called by a timer at the edge. */
  tick(): void {
    const now = this.d.now();
    if (now - this.lastStep >= 1000) {
      const secs = (now - this.lastStep) / 1000;
      this.lastStep = now;
      for (const [name, k] of this.d.knowledge.entries()) {
        const sample = k.traffic.take(secs, this.d.saturated?.(name, now) ?? null);
        // A worker of several: its primary judges the domain on every worker's second (nodeAttack brings the outcome).
        if (this.d.attackSamples) this.d.attackSamples(name, sample); else this.step(name, sample, now);
      }
    }
    if (now - this.lastLearnedSave >= LEARNED_SAVE_MS) this.saveLearned(now);
  }

  /** One second of a domain's traffic, this process's or (a primary) its node's: attack mode steps. */
  step(name: string, sample: Sample, now: number): Step {
    const t = this.d.knowledge.of(name).traffic, cfg = this.d.filter();
    const step = stepAttack(t.state, sample, cfg.attack, now);
    if (step.entered) { this.d.counters.attacksStarted++; this.d.log.warn({ domain: name, reason: t.state.reason }, 'domain under attack: filtering on'); }
    if (step.exited) this.d.log.info({ domain: name }, 'attack over: filtering relaxed');
    // The others hear of a failing upstream at once too: they tighten their filter for the domain as this one does.
    if (step.announce || (step.failingStarted && !t.state.remote)) this.d.decisions.publishAttack(name, t.state.under, t.state.since, t.state.under ? t.state.reason : null, now, t.state.upstreamFailing);
    if (step.failingStarted && cfg.mode !== 'off') this.d.banSuspects(name, now);
    return step;
  }

  /** A worker of several: the node's state of the domain, as its primary judged it (or joined from another node). */
  nodeAttack(domain: string, a: NodeAttack, now: number): void {
    const st = this.d.knowledge.of(domain).traffic.state;
    st.under = a.under; st.since = a.since; st.reason = a.reason; st.upstreamFailing = a.failing; st.remote = false;
    st.hot = st.calm = 0;
    if (a.suspects && a.under && this.d.filter().mode !== 'off') this.d.banSuspects(domain, now);
  }

  /** Another node says (at `at`) the domain is under attack (`failing`: its upstream fails there): filtered here too,
   *  unless that word is stale. */
  remoteAttack(domain: string, under: boolean, since: number, reason: string | null, at: number = since, failing = false): void {
    if (under && this.d.now() - at < ATTACK_STALE_MS && joinRemoteAttack(this.d.knowledge.of(domain).traffic.state, since || this.d.now(), reason, failing)) this.d.counters.attacksStarted++;
  }

  /** Queues what was learned of each domain for the store (written by the next flush). */
  saveLearned(now: number): void {
    this.lastLearnedSave = now;
    for (const [name, k] of this.d.knowledge.entries()) {
      const l = k.save(now), endpoints = this.d.endpointsOf?.(name);
      if (endpoints?.length) l.endpoints = endpoints;
      this.d.store.putLearned(name, l);
    }
  }
}
