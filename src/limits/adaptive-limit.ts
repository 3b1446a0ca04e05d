// A domain's (or upstream's) concurrency limit, learned from latency instead
// of configured: the idea of TCP congestion control and of Netflix's
// concurrency-limits (Gradient2), written for a proxy in front of an origin
// nobody told us the capacity of.
//
// Every answer from the origin is a sample: how long it took (dispatch to
// response headers; the time spent in our own queue is not the origin's) and
// how many requests were in flight. Samples are gathered in short windows;
// each window gives a short-term RTT (a percentile of the window, so a few
// slow outliers do not move it) and is compared with the no-load RTT (what the
// origin answers in when it is not queueing):
//   gradient = clamp((tolerance × noLoad + slackMs) / short, 0.5, 1)
//   target   = limit × gradient + √limit        (√limit: room to probe upwards)
//   limit    = limit × (1 − smoothing) + target × smoothing
// While latency stays near no-load the limit grows by about smoothing × √limit
// per window; when latency climbs the limit shrinks, by at most half a window.
//
// Until the first sign of a knee (a rise in delay, a window slower than the
// allowance, or drops), it grows as TCP's slow start does: multiplied (by 1.5,
// SLOW_START_GROWTH) by every window in which it was binding, from the first
// probe on (before it, the no-load latency may be a loaded one). A proxy (re)started in
// front of a busy, healthy site must not hold that site to the initial limit for
// the seconds √limit growth takes (from 20 to 130 took about 3 s on the
// throughput bench, every request queued meanwhile); an origin that is already
// saturated ends slow start at its first window, since its latency climbs as
// soon as more is let through.
//
// The no-load RTT must not learn from loaded samples, or the limit creeps up
// for ever under a long attack (Gradient2's long-term average does). So it
//   - follows a lower sample at once (halfway per window);
//   - follows a higher one only when the origin was not loaded by us (the
//     window used less than half the limit: "application limited"), or when
//     the limit is already at its floor; otherwise only by a tiny step;
//   - is re-measured by a probe, the way BBR's PROBE_RTT does: while the limit
//     has been binding (requests waiting in our queue) for a while, the limit
//     drops to a quarter for as long as it takes to see a few requests that
//     were dispatched at that lower concurrency. That is what lets a proxy
//     started in the middle of an attack, whose first samples are all loaded,
//     find the origin's real no-load latency within a second or two.
//
// `saturated` is the sign of attack that needs no history: requests waiting in
// front of the limit while the origin answers well above its no-load latency
// (or fails often) — demand beyond what the origin can serve.
//
// Pure: time is passed in; no timers; memory is one window of samples.
import { EndpointBaselines } from './endpoint-baselines.ts';

export interface AdaptiveLimitOptions {
  /** Limit before anything is learned. */
  initialLimit?: number;
  minLimit?: number;
  /** The explicit ceiling: domains[].maxInflight when set. */
  maxLimit?: number;
  /** Latency may reach tolerance × no-load before the limit shrinks. */
  tolerance?: number;
  /** Absolute latency allowance (ms) on top of tolerance × no-load, so that sub-millisecond origins are not judged on jitter. */
  slackMs?: number;
  /** Weight of a window's target in the new limit (0..1). */
  smoothing?: number;
  windowMs?: number;
  minWindowSamples?: number;
  /** Samples kept per window at most (bounded memory); a full window closes. */
  maxWindowSamples?: number;
  /** Which percentile of a window is its short-term RTT (0..1). */
  percentile?: number;
  /** short ≥ saturationRatio × no-load + slackMs, with the limit binding, means saturated. Below tolerance on purpose:
   *  once the limit holds the origin at its knee, latency sits near tolerance × no-load and the excess waits in our queue. */
  saturationRatio?: number;
  /** saturated stays true this long after the last saturated window (no flapping on a probe or a lull). */
  saturatedHoldMs?: number;
  /** Share of a window's samples that are drops (timeouts, 503, refused) above which the limit backs off and the origin counts as saturated. */
  dropShare?: number;
  /** The limit is multiplied by this after a window with too many drops. */
  dropBackoff?: number;
  /** The limit during a probe, as a share of the limit. */
  probeFraction?: number;
  /** First probe after the limit has been binding this long. */
  firstProbeAfterMs?: number;
  /** Later probes after this long with the limit binding and no fresh no-load evidence. */
  probeIntervalMs?: number;
  /** A probe ends after this long even with too few samples. */
  probeMaxMs?: number;
}

export interface AdaptiveLimitState {
  limit: number;
  noLoadRttMs: number | null;
  shortRttMs: number | null;
  saturated: boolean;
  probing: boolean;
  windows: number;
}

const DEFAULTS: Required<AdaptiveLimitOptions> = {
  initialLimit: 20,
  minLimit: 8,
  maxLimit: 1000,
  tolerance: 1.5,
  slackMs: 1,
  smoothing: 0.2,
  windowMs: 100,
  minWindowSamples: 5,
  maxWindowSamples: 1000,
  percentile: 0.5,
  saturationRatio: 1.4,
  saturatedHoldMs: 2000,
  dropShare: 0.1,
  dropBackoff: 0.9,
  probeFraction: 0.25,
  firstProbeAfterMs: 1000,
  probeIntervalMs: 10_000,
  probeMaxMs: 2000,
};

export class AdaptiveLimit {
  readonly opts: Required<AdaptiveLimitOptions>;
  private estimate: number;
  private noLoad: number | null = null;
  private short: number | null = null;
  private sat = false;
  private lastSaturatedAt: number | null = null;
  private windows = 0;
  /** Windows judged for saturation (outside probes), and those found saturated: a caller that steps once a second
   *  reads the share of its second that was saturated, which one slow window (a pause, a burst) cannot fake. */
  judgedWindows = 0;
  saturatedWindows = 0;
  /** The proxy's own event-loop delay lately (ms), told by the owner: every sample is timed in that loop, so a busy
   *  proxy reads its own lag as the origin's. Twice it (LAG_FACTOR) is added to the allowance, as slackMs is: what the proxy itself
   *  adds must not shrink the origin's limit, while an origin that is really saturated (tens or hundreds of ms over
   *  its unloaded latency) still is. */
  ownLagMs = 0;

  private winStart: number | null = null;
  private rtts: number[] = [];
  private winDrops = 0;
  private winMaxInflight = 0;
  private winQueued = 0;

  /** Since when the limit has been binding with no fresh no-load evidence (null: not binding). */
  private bindingSince: number | null = null;
  /** Slow start: no window has yet been slower than the allowance or had drops. */
  private slowStart = true;
  private slowStartMinMs = Infinity;
  private probes = 0;
  private probeStart: number | null = null;
  private probeRtts: number[] = [];
  /** Each endpoint's own no-load latency: a slow endpoint at its usual speed is not a loaded origin. */
  readonly endpoints = new EndpointBaselines();

  constructor(options: AdaptiveLimitOptions = {}) {
    const o = { ...DEFAULTS, ...options };
    for (const [k, v] of Object.entries(options)) if (v === undefined) (o as Record<string, unknown>)[k] = (DEFAULTS as Record<string, unknown>)[k];
    if (!(o.minLimit >= 1)) throw new Error('adaptive limit: minLimit must be ≥ 1');
    if (!(o.maxLimit >= o.minLimit)) throw new Error('adaptive limit: maxLimit must be ≥ minLimit');
    this.opts = o;
    this.estimate = clamp(o.initialLimit, o.minLimit, o.maxLimit);
  }

  /** The current limit: requests allowed in flight at once (an integer ≥ minLimit, ≤ maxLimit). */
  get limit(): number {
    const l = Math.floor(this.estimate);
    if (this.probeStart !== null) return Math.max(this.opts.minLimit, Math.ceil(l * this.opts.probeFraction));
    return l;
  }

  /** The origin is saturated: latency far above its no-load latency (or failing) while our limit is binding. */
  get saturated(): boolean { return this.sat; }

  /** saturated, unless no window has closed for saturatedHoldMs (the traffic stopped). */
  saturatedAt(now: number): boolean {
    return this.sat && this.lastSaturatedAt !== null && now - this.lastSaturatedAt <= this.opts.saturatedHoldMs;
  }

  get noLoadRttMs(): number | null { return this.noLoad; }
  get shortRttMs(): number | null { return this.short; }

  state(): AdaptiveLimitState {
    return { limit: this.limit, noLoadRttMs: this.noLoad, shortRttMs: this.short, saturated: this.sat, probing: this.probeStart !== null, windows: this.windows };
  }

  /** The explicit ceiling changed (config reload). */
  setMaxLimit(max: number): void {
    // A limit held down by the old ceiling was never learned: a raised ceiling lets it up at once (to the start value at most).
    const pinned = this.estimate >= this.opts.maxLimit;
    this.opts.maxLimit = Math.max(this.opts.minLimit, max);
    if (pinned) this.estimate = Math.max(this.estimate, this.opts.initialLimit);
    this.estimate = Math.min(this.estimate, this.opts.maxLimit);
  }

  /**
   * One answered (or failed) origin request.
   * @param now      ms clock
   * @param rttMs    dispatch to response headers (or to failure)
   * @param inflight requests in flight to the origin when it completed (itself included)
   * @param dropped  a failure that says the origin is overloaded: timeout, 503, connection refused/reset
   * @param queued   requests waiting in front of the limit at that moment, when the caller knows it
   * @param endpoint what the request asked for (endpointOf): the sample is judged against that endpoint's baseline
   */
  onSample(now: number, rttMs: number, inflight: number, dropped = false, queued?: number, endpoint?: string): void {
    if (!Number.isFinite(rttMs) || rttMs < 0) return;
    if (this.winStart === null) this.winStart = now;
    // First mapped by its endpoint's own usual latency (a slow search is not a loaded origin): endpoint-baselines.ts.
    const inProbe = this.probeStart !== null && now - rttMs >= this.probeStart, o = this.opts;
    if (!dropped && endpoint !== undefined) rttMs = this.endpoints.scale(endpoint, rttMs, this.noLoad, inProbe, o.tolerance - 1, o.slackMs + LAG_FACTOR * this.ownLagMs);
    if (dropped) this.winDrops++;
    else if (this.rtts.length < this.opts.maxWindowSamples) this.rtts.push(rttMs);
    if (inflight > this.winMaxInflight) this.winMaxInflight = inflight;
    if (queued !== undefined && queued > this.winQueued) this.winQueued = queued;

    if (inProbe && !dropped && this.probeRtts.length < o.maxWindowSamples) this.probeRtts.push(rttMs); // dispatched in it (rttMs is mapped now)
    this.maybeEndProbe(now);

    const n = this.rtts.length + this.winDrops;
    const elapsed = now - this.winStart;
    if ((elapsed >= this.opts.windowMs && n >= this.opts.minWindowSamples) || this.rtts.length >= this.opts.maxWindowSamples || (elapsed >= this.opts.windowMs * 20 && n > 0)) this.closeWindow(now);
  }

  private maybeEndProbe(now: number): void {
    if (this.probeStart === null) return;
    const enough = this.probeRtts.length >= this.opts.minWindowSamples;
    if (!enough && now - this.probeStart < this.opts.probeMaxMs) return;
    if (this.probeRtts.length) {
      const p = percentile(this.probeRtts, this.opts.percentile);
      if (this.noLoad === null || p < this.noLoad) this.noLoad = p;
    }
    this.endpoints.endProbe();
    this.probeStart = null; this.probeRtts = [];
    this.bindingSince = null;
  }

  private closeWindow(now: number): void {
    const o = this.opts;
    const total = this.rtts.length + this.winDrops;
    const dropRatio = total ? this.winDrops / total : 0;
    const limitNow = this.limit;
    const appLimited = this.winMaxInflight < limitNow / 2;
    const binding = this.winQueued > 0 || this.winMaxInflight >= Math.max(1, limitNow * 0.9);
    const s = this.rtts.length ? percentile(this.rtts, o.percentile) : null;
    // What a window may take on top of the origin's latency: jitter, and what the proxy's own loop adds.
    const allowance = o.slackMs + LAG_FACTOR * this.ownLagMs;
    this.windows++;
    this.endpoints.closeWindow(binding || this.probeStart !== null, appLimited && this.probeStart === null);

    if (s !== null) {
      this.short = s;
      if (this.noLoad === null) this.noLoad = s;
      else if (s < this.noLoad) this.noLoad += 0.5 * (s - this.noLoad);
      else if (appLimited || this.estimate <= o.minLimit) this.noLoad += 0.05 * (s - this.noLoad);
      else this.noLoad += 0.0002 * (s - this.noLoad);
    }

    // During a probe the estimate is left alone: the probe's samples are not what the limit produces.
    if (this.probeStart === null) {
      if (dropRatio > o.dropShare) { this.estimate *= o.dropBackoff; this.slowStart = false; }
      else if (s !== null && this.noLoad !== null && !appLimited) {
        const gradient = clamp((o.tolerance * this.noLoad + allowance) / Math.max(s, 1e-6), 0.5, 1);
        // Slow start ends as HyStart does, on the first rise in delay (an eighth over the lowest window of slow start),
        // not only past the allowance: by then the origin's own queue would already hold several windows' worth.
        this.slowStartMinMs = Math.min(this.slowStartMinMs, s);
        if (gradient < 1 || s > this.slowStartMinMs * 1.125 + allowance) this.slowStart = false;
        // Only once a probe has measured the unloaded origin: before it, the no-load latency may be a loaded one (a
        // proxy started mid-attack), and growing fast past the demand would leave no queue to probe from.
        if (this.slowStart && binding && this.probes > 0) this.estimate *= SLOW_START_GROWTH;
        else {
          const target = this.estimate * gradient + Math.sqrt(this.estimate);
          this.estimate = this.estimate * (1 - o.smoothing) + target * o.smoothing;
        }
      }
      this.estimate = clamp(this.estimate, o.minLimit, o.maxLimit);
    }

    // A probe's windows say nothing about the demand: saturation is judged outside them.
    if (this.probeStart === null) {
      const slow = s !== null && this.noLoad !== null && s >= o.saturationRatio * this.noLoad + allowance;
      this.judgedWindows++;
      if (binding && (slow || dropRatio > o.dropShare)) { this.lastSaturatedAt = now; this.saturatedWindows++; }
      this.sat = this.lastSaturatedAt !== null && now - this.lastSaturatedAt <= o.saturatedHoldMs;
    }

    // Probe scheduling: binding with no evidence of what the unloaded origin answers in.
    if (this.probeStart === null) {
      if (!binding) this.bindingSince = null;
      else {
        this.bindingSince ??= now;
        const wait = this.probes === 0 ? o.firstProbeAfterMs : o.probeIntervalMs;
        if (now - this.bindingSince >= wait && this.estimate * o.probeFraction < this.estimate - 1) {
          this.probes++;
          this.probeStart = now;
          this.probeRtts = [];
        }
      }
    }

    this.winStart = now;
    this.rtts = [];
    this.winDrops = 0;
    this.winMaxInflight = 0;
    this.winQueued = 0;
  }
}

/** How many of the proxy's own event-loop delays (ownLagMs, a p90) a sample may carry: a request can wait up to an
 *  iteration to go out and its answer up to another to be read, behind everything else the loop handles in that
 *  turn. With one delay allowed, two workers sharing one core under clean load (lag 15–27 ms, answers read 20–50 ms
 *  after dispatch from an origin that answers in 1.5 ms) were read as a saturated origin, and attack mode started. */
const LAG_FACTOR = 2;

/** Slow start's growth per binding window: 1.5 rather than TCP's 2, since the window that shows the knee comes after
 *  the step that crossed it; from 20, still past 150 in five windows (half a second). */
const SLOW_START_GROWTH = 1.5;

function clamp(x: number, lo: number, hi: number): number { return x < lo ? lo : x > hi ? hi : x; }

/** The p-th percentile (0..1) of xs; sorts xs in place. */
export function percentile(xs: number[], p: number): number {
  xs.sort((a, b) => a - b);
  return xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(p * xs.length) - 1))];
}
