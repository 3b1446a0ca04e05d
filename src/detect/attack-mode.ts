// Attack mode per domain: learn the domain's normal traffic (request rate,
// latency) and switch filtering on when it departs from it, with hysteresis
// so it does not flap. An upstream that starts failing (502/503/504, timeouts,
// refused connections, or 500s far above their learned share) is a sign of
// attack by itself, and tightens the filter.
// So is a saturated origin: requests waiting behind the domain's adaptive limit
// while the origin answers well above its own unloaded latency
// (limits/adaptive-limit.ts). That sign needs no learned baseline and no
// capacity from the operator, so a proxy started in the middle of an attack
// engages by itself; the queue keeps the origin from failing, so failures
// alone would never show it. A flash crowd the origin can serve does not
// saturate it (latency stays near its unloaded latency, or nothing waits);
// one that overloads it for a moment is told from a flood by its kind: the
// sources waiting fetch pages with their assets at a person's pace, as
// people's browsers do (a bot that fetches assets but never pauses does not).
// With no adaptive limit (limits.adaptive.enabled false), a domain with a
// fixed maxInflight whose requests wait in its queue is the same sign.
// stepAttack is pure: one second of counts in, the new state out.
import { ATTACK_REFRESH_MS } from '../decisions/bus.ts';

export interface AttackParams {
  /** Below this many requests per second a domain is never under attack. */
  minRps: number;
  /** Attack when the rate passes this multiple of the learned baseline. */
  rateFactor: number;
  /** Attack when the mean latency passes this multiple of the baseline ... */
  latencyFactor: number;
  /** ... and this many ms. */
  minLatencyMs: number;
  /** Attack when this share of requests fail upstream (502/503/504, timeouts, refused), or answer 500 this share
   *  above the domain's learned usual share. */
  errorRatio: number;
  /** Consecutive hot seconds before attack mode starts. */
  enterSeconds: number;
  /** Consecutive calm seconds before it ends. */
  exitSeconds: number;
  /** Time constant of the baseline (an exponential moving average). */
  learnSeconds: number;
}

export interface AttackState {
  baselineRps: number;
  baselineLatencyMs: number;
  /** The usual share of requests the application answers 500 (its buggy pages), learned as the rate is. */
  baselineAppErrors: number;
  /** Seconds of calm traffic learned so far. */
  learned: number;
  under: boolean;
  hot: number;
  calm: number;
  /** When the current attack started (ms), 0 when calm. */
  since: number;
  /** The upstream is failing, or its queue is crowded, in this attack, here or on the node that found it (the score
   *  line is lowered). */
  upstreamFailing: boolean;
  /** This process saw it fail (or crowded) itself in this attack, and went after its suspects: another node's word
   *  tightens the line but leaves them to this process's own first failing second. */
  failingSeen: boolean;
  /** Why it is (or was last) under attack. */
  reason: string;
  /** Under attack because another worker or node said so, not (yet) by what this process sees: its end is not
   *  announced (it would overwrite the state of the node still under attack). */
  remote: boolean;
  /** When this process last told the others it is under attack (ms): it says so again every ATTACK_REFRESH_MS. */
  announcedAt: number;
}

export interface Sample {
  /** Requests that arrived, whatever became of them. */
  requests: number;
  /** Requests forwarded and answered by the upstream. */
  answered: number;
  latencySumMs: number;
  /** The median latency of the second's answers (a stride sample of them; absent: the mean is used). */
  latencyMs?: number;
  upstreamErrors: number;
  /** Requests the application answered 500 (observation.ts isAppError). */
  appErrors?: number;
  /** Requests that had to wait in the domain's upstream queue (it was at maxInflight). */
  queued: number;
  seconds: number;
  /** The origin was saturated over this second (its adaptive limit says so); null: the domain has no adaptive limit. */
  saturated?: boolean | null;
  /** Of `queued`, requests of sources that had fetched a page and its assets at a person's pace (their score low): people browsing. */
  queuedBrowsing?: number;
}

/** A domain's attack state as a node of several workers has it: its primary judges the domain on every worker's
 *  second (their samples summed) and tells the workers; `suspects`: the upstream just started failing, each worker
 *  bans the most suspicious of its own sources (it alone knows them). */
export interface NodeAttack { under: boolean; since: number; reason: string; failing: boolean; suspects: boolean }

/** Several processes' seconds of one domain as one: counts add up, the rate is the sum of their rates (`seconds` is
 *  chosen so), and the origin was saturated when at least half of those with an adaptive limit say so (each limit
 *  judges the same origin on its share of the requests). Pure. */
export function combineSamples(ss: readonly Sample[]): Sample {
  const out: Sample = { requests: 0, answered: 0, latencySumMs: 0, upstreamErrors: 0, appErrors: 0, queued: 0, seconds: 0, saturated: null, queuedBrowsing: 0 };
  let rate = 0, secs = 0, judged = 0, saturated = 0, medians = 0;
  for (const s of ss) {
    if (s.latencyMs !== undefined && s.answered > 0) medians += s.latencyMs * s.answered;
    const sec = s.seconds > 0 ? s.seconds : 1;
    out.requests += s.requests; out.answered += s.answered; out.latencySumMs += s.latencySumMs;
    out.upstreamErrors += s.upstreamErrors; out.appErrors! += s.appErrors ?? 0; out.queued += s.queued; out.queuedBrowsing! += s.queuedBrowsing ?? 0;
    rate += s.requests / sec; secs += sec;
    if (s.saturated != null) { judged++; if (s.saturated) saturated++; }
  }
  out.seconds = out.requests > 0 ? out.requests / rate : ss.length ? secs / ss.length : 1;
  if (judged) out.saturated = saturated * 2 >= judged;
  // The processes' medians weighed by their answers: near enough the node's median for a sign that compares with a factor.
  if (out.answered > 0 && ss.every((s) => s.answered === 0 || s.latencyMs !== undefined)) out.latencyMs = medians / out.answered;
  return out;
}

/** Under attack by rate alone, the rate let through is learned this many times slower than calm seconds are. */
const UNDER_ATTACK_LEARN_SLOWER = 10;
/** Fewer upstream failures than this in a second are chance, whatever their share (one 503 in five requests). */
const MIN_FAILURES = 3;
/** A saturated second is a crowd, not an attack, when at least this share of the requests that waited came from sources browsing like people. */
const BROWSING_SHARE = 0.5;

export const newAttackState = (): AttackState => ({ baselineRps: 0, baselineLatencyMs: 0, baselineAppErrors: 0, learned: 0, under: false, hot: 0, calm: 0, since: 0, upstreamFailing: false, failingSeen: false, reason: '', remote: false, announcedAt: 0 });

/** `announce`: the others are told the state now (it started, it ended here, or it goes on: ATTACK_REFRESH_MS). */
export interface Step { entered: boolean; exited: boolean; failingStarted: boolean; announce: boolean }

/** Advances the state by one sample. Mutates and returns `st` (it is owned by the caller). */
export function stepAttack(st: AttackState, s: Sample, p: AttackParams, now: number): Step {
  const secs = s.seconds > 0 ? s.seconds : 1;
  const rps = s.requests / secs;
  // The median, not the mean: a few answers held on purpose (long polls: the application answers when there is news)
  // would make the mean of a second seconds long with nothing slow; an origin in trouble slows most of its answers.
  const latency = s.answered > 0 ? s.latencyMs ?? s.latencySumMs / s.answered : 0;
  // Until a baseline is learned (the first min(learnSeconds, 30) calm seconds) the rate alone
  // proves nothing: a busy site would look attacked at every start. Latency and failures still count.
  const warm = st.learned >= Math.min(p.learnSeconds, 30);
  const rateHot = warm && rps >= p.minRps && rps > p.rateFactor * st.baselineRps;
  // A latency baseline needs some calm traffic first; before that only minLatencyMs counts.
  const latencyLine = Math.max(p.minLatencyMs, st.learned > 0 ? p.latencyFactor * st.baselineLatencyMs : 0);
  const latencyHot = s.answered >= 5 && latency > latencyLine;
  // An application failing fast under load answers at once (no latency, nothing waits): its 500s are then the only
  // sign. Judged above its usual share of them (a site with a buggy page answers some 500s every second, attack or not),
  // once that share is learned: as for the rate, the first seconds only learn.
  const appShare = s.requests > 0 ? (s.appErrors ?? 0) / s.requests : 0;
  const appFailing = warm && s.requests >= 5 && (s.appErrors ?? 0) >= MIN_FAILURES && appShare - st.baselineAppErrors >= p.errorRatio;
  const hardFailing = s.requests >= 5 && s.upstreamErrors >= MIN_FAILURES && s.upstreamErrors / s.requests >= p.errorRatio;
  const failing = hardFailing || appFailing;
  // With an adaptive limit, waiting alone proves nothing (the limit may still be growing towards a flash crowd):
  // the limit's own judgement (waiting and slow) replaces it. A saturated origin whose waiting demand mostly comes
  // from sources that fetch pages with their assets is a crowd of people (new visitors arriving at once): the fair
  // queue serves them in turn, and a challenge would only send each of them a redirect. Sources that browse like
  // people but take more than their share of the origin are the fair share's to deal with, not attack mode's.
  const browsing = s.queued >= 5 && (s.queuedBrowsing ?? 0) >= BROWSING_SHARE * s.queued;
  const crowded = s.saturated != null ? s.saturated && !browsing : s.requests >= 5 && s.queued / s.requests >= p.errorRatio;
  const hot = rateHot || latencyHot || failing || crowded;
  const out: Step = { entered: false, exited: false, failingStarted: false, announce: false };
  const wasRemote = st.remote;

  if (hot) { st.hot++; st.calm = 0; } else { st.calm++; st.hot = 0; }

  if (!st.under && st.hot >= p.enterSeconds) {
    st.under = true;
    st.since = now;
    st.reason = failing ? 'upstream failing' : crowded ? (s.saturated ? 'origin saturated (requests waiting, latency far above its unloaded latency)' : 'upstream at capacity (requests queued)') : rateHot ? `rate ${rps.toFixed(0)}/s over baseline ${st.baselineRps.toFixed(1)}/s` : `latency ${latency.toFixed(0)} ms over baseline ${st.baselineLatencyMs.toFixed(0)} ms`;
    out.entered = true;
  } else if (st.under && st.calm >= (st.remote ? Math.max(p.exitSeconds, REMOTE_HOLD_S) : p.exitSeconds)) {
    st.under = false;
    st.since = 0;
    st.upstreamFailing = st.failingSeen = false;
    out.exited = true;
  } else if (st.under && st.remote && st.hot >= p.enterSeconds) {
    st.remote = false; // seen here too: this process's own attack now, said at once
    st.announcedAt = -Infinity;
    st.upstreamFailing = st.failingSeen; // by what it sees itself from now on, not another node's word
  }
  if (out.entered || out.exited) st.remote = false;
  out.announce = out.entered || (out.exited && !wasRemote) || (st.under && !st.remote && now - st.announcedAt >= ATTACK_REFRESH_MS);
  if (out.announce) st.announcedAt = now;
  // A crowded queue is the same pressure caught before the application fails: tighten and go after the suspects.
  if (st.under && (failing || crowded) && !st.failingSeen) { st.upstreamFailing = st.failingSeen = true; out.failingStarted = true; }

  // Learn only from calm seconds: an attack must not become the new normal.
  if (!st.under && !hot) {
    // While warming up, a plain running mean; then the moving average.
    const a = Math.min(1, warm ? secs / p.learnSeconds : secs / (st.learned + secs));
    st.baselineRps += a * (rps - st.baselineRps);
    if (s.answered > 0) st.baselineLatencyMs = st.baselineLatencyMs > 0 ? st.baselineLatencyMs + a * (latency - st.baselineLatencyMs) : latency;
    if (s.requests > 0) st.baselineAppErrors += a * (appShare - st.baselineAppErrors);
    st.learned += secs;
  } else if (st.under && appFailing && !hardFailing && !rateHot && !latencyHot && !crowded) {
    // Under attack by 500s alone: a site whose bug now fails a page for good would stay in attack mode, so its share
    // is learned, ten times slower than in calm (a flood that makes the application fail for a while moves it little).
    st.baselineAppErrors += Math.min(1, secs / (UNDER_ATTACK_LEARN_SLOWER * p.learnSeconds)) * (appShare - st.baselineAppErrors);
  } else if (st.under && rateHot && !latencyHot && !failing && !crowded) {
    // Under attack by its rate alone, the origin well (answering at its usual pace, nothing failing, nothing waiting):
    // a new level of real traffic (the site's own after a DNS switch to a proxy that learned the trickle before it, a
    // campaign that lasts) would hold attack mode for as long as it lasts. The rate the filter lets through to the
    // origin is learned then, upwards only: a flood it holds back (challenged, refused, banned) does not pass and does
    // not become the new normal; people, who pass, do, and attack mode ends once the rate is theirs. Ten times slower
    // than in calm: a flood that gets through for a while (before its sources are banned) moves it little.
    const passed = s.answered / secs;
    if (passed > st.baselineRps) st.baselineRps += Math.min(1, secs / (UNDER_ATTACK_LEARN_SLOWER * p.learnSeconds)) * (passed - st.baselineRps);
  }
  return out;
}

/** Answer latencies kept per second for the median: every one up to this many, then a stride sample (every 2nd, 4th…). */
const LATENCY_SAMPLES = 64;

/** The median of the first n values of a (reordered). */
const median = (a: Float64Array, n: number, v = a.subarray(0, n).sort()): number => n % 2 ? v[n >> 1] : (v[n / 2 - 1] + v[n / 2]) / 2;

/** One domain's counts for the current second, filled on the request path (plain increments). */
export class DomainTraffic {
  requests = 0;
  answered = 0;
  latencySumMs = 0;
  private readonly latencies = new Float64Array(LATENCY_SAMPLES);
  private kept = 0; private stride = 1;
  upstreamErrors = 0;
  appErrors = 0;
  queued = 0;
  queuedBrowsing = 0;
  readonly state: AttackState;

  constructor(state: AttackState = newAttackState()) { this.state = state; }

  /** An answer of the application, its latency (ms). Answers 0, stride, 2 × stride… of the second are kept. */
  answer(ms: number): void {
    const i = this.answered++;
    this.latencySumMs += ms;
    if (i % this.stride !== 0) return;
    if (this.kept === LATENCY_SAMPLES) { // full: every other one kept, and from now on every other one of those
      for (let j = 0; j < LATENCY_SAMPLES / 2; j++) this.latencies[j] = this.latencies[2 * j];
      this.kept = LATENCY_SAMPLES / 2; this.stride *= 2;
      if (i % this.stride !== 0) return;
    }
    this.latencies[this.kept++] = ms;
  }

  take(seconds: number, saturated: boolean | null = null): Sample {
    const latencyMs = this.kept > 0 ? median(this.latencies, this.kept) : undefined;
    this.kept = 0; this.stride = 1;
    const s = { requests: this.requests, answered: this.answered, latencySumMs: this.latencySumMs, latencyMs, upstreamErrors: this.upstreamErrors, appErrors: this.appErrors, queued: this.queued, seconds, saturated, queuedBrowsing: this.queuedBrowsing };
    this.requests = this.answered = this.latencySumMs = this.upstreamErrors = this.appErrors = this.queued = this.queuedBrowsing = 0;
    return s;
  }
}

const REMOTE = 'found elsewhere: ';
/** A state joined from elsewhere is held this many calm seconds after the last word of it (the other process says it
 *  again every ATTACK_REFRESH_MS while its attack lasts): it ends here some two minutes after it ends there. */
const REMOTE_HOLD_S = (2 * ATTACK_REFRESH_MS) / 1000;
/** A state not said again for this long was left by a process that stopped under attack: not taken up. */
export const ATTACK_STALE_MS = 3 * ATTACK_REFRESH_MS;
/** Another node found the domain under attack: this one filters too from `since` (and leaves attack mode by its own
 *  calm seconds); `failing`: the upstream fails there (or its queue is crowded), so the filter is tightened here too,
 *  as it is there (the upstream is the same). Mutates st; true when it entered attack mode. */
export function joinRemoteAttack(st: AttackState, since: number, reason: string | null, failing = false): boolean {
  if (st.under) {
    if (st.remote) st.calm = 0; // said again: held on
    if (st.remote && failing) st.upstreamFailing = true; // its own attack: what it sees decides
    return false;
  }
  st.upstreamFailing = failing;
  st.under = true;
  st.since = since;
  st.calm = 0;
  st.remote = true;
  st.reason = reason?.startsWith(REMOTE) ? reason : `${REMOTE}${reason ?? 'attack'}`;
  return true;
}

/** What of a domain's attack state is kept across a restart (FilterStore.putLearned). */
export interface SavedAttack {
  baselineRps: number;
  baselineLatencyMs: number;
  /** Absent in what a version before it saved. */
  baselineAppErrors?: number;
  learned: number;
  under: boolean;
  since: number;
  upstreamFailing: boolean;
  reason: string;
  /** Joined from elsewhere (absent in what a version before it saved). */
  remote?: boolean;
}

export const saveAttack = (st: AttackState): SavedAttack => ({
  baselineRps: st.baselineRps, baselineLatencyMs: st.baselineLatencyMs, baselineAppErrors: st.baselineAppErrors, learned: st.learned,
  under: st.under, since: st.since, upstreamFailing: st.upstreamFailing, reason: st.reason, remote: st.remote,
});

/**
 * The state a restarted proxy starts from. The learned baseline comes back whole: without it the first
 * seconds after a restart cannot judge the rate, and an attack under way would be learned as normal.
 * An attack comes back only if the state was saved less than exitSeconds ago: had the proxy stayed up
 * through calm traffic it would have left attack mode by then, and a longer absence tells nothing
 * either way (the signs of attack bring it back within enterSeconds).
 */
export function restoreAttack(saved: SavedAttack, savedAt: number, now: number, p: AttackParams): AttackState {
  const st = newAttackState();
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
  st.baselineRps = num(saved.baselineRps);
  st.baselineLatencyMs = num(saved.baselineLatencyMs);
  st.baselineAppErrors = Math.min(1, num(saved.baselineAppErrors));
  st.learned = num(saved.learned);
  if (saved.under === true && now - savedAt < p.exitSeconds * 1000) {
    st.under = true;
    st.since = num(saved.since) || savedAt;
    st.upstreamFailing = saved.upstreamFailing === true;
    st.reason = typeof saved.reason === 'string' ? saved.reason : '';
    // Joined from elsewhere before the restart: still not this process's to announce.
    st.remote = saved.remote === true || st.reason.startsWith(REMOTE);
    // Its own attack's suspects were gone after before the restart; a joined one's are left to its own failing second.
    st.failingSeen = st.upstreamFailing && !st.remote;
  }
  return st;
}
