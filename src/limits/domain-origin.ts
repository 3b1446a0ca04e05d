// One domain's part of the origin guard (origin-guard.ts): its upstream queue,
// its learned limit, the sources' shares of its origin time and the
// newcomers' slice, with the questions asked of them together: has a source a
// history with this origin, and was the origin saturated over the last second.
import { HolderList } from './holders.ts';
import type { AdaptiveLimit } from './adaptive-limit.ts';
import type { UpstreamQueue } from './upstream-queue.ts';
import type { FairShare } from '../detect/fair-share.ts';
import { NewcomerSlice } from './newcomer-slice.ts';

/** A second is saturated when at least this share of its judged windows was. */
const SATURATED_SHARE = 0.5;

/** One domain's queue, learned limit and shares. */
export class DomainOrigin {
  readonly name: string;
  readonly queue: UpstreamQueue;
  /** null: limits.adaptive is off (the queue holds domains[].maxInflight, or nothing). */
  limit: AdaptiveLimit | null = null;
  readonly share: FairShare;
  /** The origin time all sources without a history share while the domain is under attack. */
  readonly slice: NewcomerSlice;
  /** Requests holding a place in the limit now (the flows add and remove themselves). */
  readonly holders = new HolderList();
  /** The limit's window counters when attack mode last asked (see takeSaturated). */
  private judgedSeen = 0;
  private saturatedSeen = 0;
  /** domains[].maxInflight, 0 when none: the learned limit's ceiling. */
  ceiling = 0;

  constructor(name: string, queue: UpstreamQueue, share: FairShare) {
    this.name = name;
    this.queue = queue;
    this.share = share;
    this.slice = new NewcomerSlice({ windowMs: share.opts.windowMs });
  }

  /**
   * Whether source has a history with this origin: it used it before the attack began (attackSince, 0 when no
   * attack) or before the origin became saturated (what saturates it cannot be older than that), or for the fair
   * share's historyMs already. A rotating flood's addresses, each gone after a handful of requests, never have one;
   * a client that keeps coming back gets one whatever its headers, and is from then on judged by its own share.
   */
  established(now: number, source: string, attackSince: number): boolean {
    const first = this.share.firstSeen(source);
    if (first === null) return false;
    if (now - first >= this.share.opts.historyMs) return true;
    return (attackSince > 0 && first < attackSince) || (this.saturatedSince > 0 && first < this.saturatedSince);
  }

  /** When the origin's current saturated stretch began (0: not saturated); kept by noteSaturation at every answer. */
  saturatedSince = 0;
  noteSaturation(now: number, saturated: boolean): void {
    if (!saturated) this.saturatedSince = 0;
    else if (this.saturatedSince === 0) this.saturatedSince = now;
  }

  /** The origin is saturated now (held a little: the queue order does not flap between windows). */
  saturatedAt(now: number): boolean { return this.limit !== null && this.limit.saturatedAt(now); }

  /**
   * Whether the origin was saturated since the last call (attack mode steps once a second): most of the windows
   * judged in between were, or — with too little traffic to close a window — the limit still says so. null: no
   * adaptive limit.
   */
  takeSaturated(now: number): boolean | null {
    const l = this.limit;
    if (!l) return null;
    const judged = l.judgedWindows - this.judgedSeen, sat = l.saturatedWindows - this.saturatedSeen;
    this.judgedSeen = l.judgedWindows;
    this.saturatedSeen = l.saturatedWindows;
    const saturated = judged > 0 ? sat >= SATURATED_SHARE * judged : l.saturatedAt(now);
    // Held at the operator's ceiling (domains[].maxInflight), waiting is demand beyond the capacity they declared:
    // attack mode then judges the share of requests that waited, as with a fixed limit.
    if (saturated) return true;
    return this.ceiling > 0 && l.limit >= this.ceiling ? null : false;
  }
}
