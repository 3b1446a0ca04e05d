// One slice of a domain's origin for all the sources without a history, while
// the domain is under attack.
//
// Why: the fair share and the fair queue judge sources one by one, by the
// origin time each used. A rotating flood (every address sends a handful of
// requests and is never seen again) has no source to judge: each is a
// newcomer whose zero says nothing, and together they take the origin. The
// cookie challenge tells browsers from such a flood, but a request the
// challenge policy exempts (an API call, an app: no cookie round trip) gets no
// challenge, so a flood that copies an API client's headers would pass. While
// the domain is under attack, sources that cannot be told apart one by one are
// therefore judged together, as one source: all newcomers share the origin
// time one source may take before it is over its share (overShareRatio × the
// typical source's, the fair share's line), and what goes beyond is refused
// (429 for an exempt request, as the caller decides). Sources with a history
// keep theirs, whatever the newcomers do. Outside an attack nothing is judged:
// a flash crowd of new visitors is all newcomers.
//
// The slice is counted in origin time, not requests, so that an expensive
// call (a search) costs what it costs the origin: cost, not count. It is a
// token bucket of origin ms, refilled at allowance / window and holding at
// most burstMs worth of it, so the newcomers get their slice spread over the
// window rather than in bursts whenever it grows. Requests admitted and not
// answered yet count at the mean newcomer request's time, so a burst cannot be
// admitted before the first answers come back; an answer that took long (a
// timeout) leaves a debt, of one window's allowance at most.
//
// Pure: time is passed in. Memory: a few numbers per domain.

export interface NewcomerSliceOptions {
  /** The allowance is per this window (the fair share's). */
  windowMs?: number;
  /** The bucket holds at most this long's worth of the allowance. */
  burstMs?: number;
}

export class NewcomerSlice {
  readonly windowMs: number;
  readonly burstMs: number;
  /** Origin ms the newcomers may still use now (negative: a debt). */
  tokens = 0;
  private last: number | null = null;
  /** Newcomer requests admitted and not answered (nor given up) yet. */
  held = 0;
  /** Mean origin ms of a newcomer's request (exponential average); null before the first answer. */
  meanMs: number | null = null;
  /** Newcomer requests admitted and refused, in all (statistics). */
  admitted = 0;
  refused = 0;

  constructor(o: NewcomerSliceOptions = {}) {
    this.windowMs = o.windowMs ?? 20_000;
    this.burstMs = o.burstMs ?? 2000;
  }

  /**
   * May one more newcomer request go to the origin? `allowanceMs`: the origin ms all newcomers together may use per
   * window; null while nobody knows what a source typically uses (then one at a time). True: it holds a place (the
   * caller owes one leave()).
   */
  admit(now: number, allowanceMs: number | null): boolean {
    let ok: boolean;
    if (allowanceMs === null) ok = this.held === 0;
    else {
      const cap = (allowanceMs * this.burstMs) / this.windowMs;
      // The bucket starts full (the first second of an attack), then refills at allowance per window.
      this.tokens = this.last === null ? cap : Math.min(cap, this.tokens + (Math.max(0, now - this.last) * allowanceMs) / this.windowMs);
      this.tokens = Math.max(this.tokens, -allowanceMs);
      this.last = now;
      ok = this.meanMs === null ? this.held === 0 && this.tokens > 0 : this.tokens - this.held * this.meanMs > 0;
    }
    if (!ok) { this.refused++; return false; }
    this.held++;
    this.admitted++;
    return true;
  }

  /** An admitted request is done with the origin: answered or failed after originMs, or given up (null: no answer). */
  leave(originMs: number | null): void {
    if (this.held > 0) this.held--;
    if (originMs === null || !(originMs >= 0)) return;
    this.tokens -= originMs;
    this.meanMs = this.meanMs === null ? originMs : this.meanMs + 0.2 * (originMs - this.meanMs);
  }
}
