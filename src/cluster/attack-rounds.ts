// Attack mode of a node of several workers is judged once, by its primary, on
// the domain's whole traffic: each worker sees only the share of a domain's
// requests its sources bring, so judged there, fixed counts (5 requests, 3
// failures a second) would take N times the traffic to show, and a rise from
// the few sources of one worker would be measured against a 1/N baseline.
// Each worker sends its seconds of every domain it knows; this gathers them
// into the node's seconds: a round closes once every worker that sent the
// domain lately has sent its second of it, or after ROUND_WAIT_MS (a worker
// that died or lags). Pure; time is passed in.
import { combineSamples, type Sample } from '../detect/attack-mode.ts';

/** A round waits this long for a worker's second (a worker steps every 1–1.25 s, its tick being 250 ms). */
export const ROUND_WAIT_MS = 1500;
/** A worker not heard from for this long is not waited for (it died, or is being replaced). */
const LIVE_MS = 3000;

interface Round { opened: number; by: Map<number, Sample> }

export class AttackRounds {
  private readonly rounds = new Map<string, Round>();
  /** By domain, when each worker last sent a second of it: a worker none of whose sources came for a domain sends
   *  nothing of it, and is not waited for (its round would close only by ROUND_WAIT_MS, a step every two seconds). */
  private readonly lastSeen = new Map<string, Map<number, number>>();

  /** A worker's second of a domain. Returns the node's second when this closes the domain's round. */
  add(worker: number, domain: string, s: Sample, now: number): Sample | null {
    let seen = this.lastSeen.get(domain);
    if (!seen) { seen = new Map(); this.lastSeen.set(domain, seen); }
    seen.set(worker, now);
    let r = this.rounds.get(domain);
    if (!r) { r = { opened: now, by: new Map() }; this.rounds.set(domain, r); }
    const before = r.by.get(worker);
    // A worker's second second before the round closed (the others lag): both are its share of this round.
    r.by.set(worker, before ? add(before, s) : s);
    if (r.by.size < live(seen, now)) return null;
    this.rounds.delete(domain);
    return combineSamples([...r.by.values()]);
  }

  /** Rounds left open ROUND_WAIT_MS or longer, closed with what came. */
  due(now: number): [string, Sample][] {
    const out: [string, Sample][] = [];
    for (const [domain, r] of this.rounds) {
      if (now - r.opened < ROUND_WAIT_MS) continue;
      this.rounds.delete(domain);
      out.push([domain, combineSamples([...r.by.values()])]);
    }
    return out;
  }
}

/** How many workers sent a second of the domain lately (those that stopped are forgotten). */
function live(seen: Map<number, number>, now: number): number {
  let n = 0;
  for (const [w, t] of seen) { if (now - t <= LIVE_MS) n++; else seen.delete(w); }
  return n;
}

/** One process's two seconds as one longer sample (its rate over both). */
function add(a: Sample, b: Sample): Sample {
  const secs = (a.seconds > 0 ? a.seconds : 1) + (b.seconds > 0 ? b.seconds : 1);
  const c = combineSamples([a, b]);
  return { ...c, seconds: secs };
}
