// How far this node's clock is from Redis's. Nodes order their decisions by
// the time each was made (the later one stands, redis-write.ts), and a ban's
// expiry is a time too: a node whose clock runs seconds ahead wins every
// conflict it takes part in and hands out bans that end early elsewhere. The
// offset is measured against the one clock every node sees (Redis's TIME),
// logged when it grows past CLOCK_SKEW_WARN_MS, and shown in /healthz, so the
// operator fixes the clock (NTP) before it decides anything.
import type { BusLogger } from './redis-keys.ts';

/** Decisions made this close together on different nodes are simultaneous to the cluster anyway (a ban reaches every
 *  node within a second): an offset past that reorders decisions the operator would call ordered. */
export const CLOCK_SKEW_WARN_MS = 1000;
/** How often the offset is measured (a TIME round trip: nothing next to the heartbeat's PING every second). */
export const CLOCK_CHECK_EVERY_MS = 30_000;
/** A measurement whose round trip took longer than this says little about the offset: it is not used. */
const MAX_ROUND_TRIP_MS = 250;
/** Measurements in a row that said nothing before the log says the offset cannot be measured (one a heartbeat). */
export const UNMEASURED_WARN_AFTER = 10;

/**
 * The local clock minus Redis's (positive: this node runs ahead), from a TIME reply (seconds, microseconds) asked
 * at `sentAt` and answered at `receivedAt` (local ms): Redis read its clock somewhere in between, taken as the middle
 * (error at most half the round trip). Null when the round trip was too long to say, or the reply is not a time.
 */
export function clockOffset(sentAt: number, receivedAt: number, reply: readonly (string | number)[]): number | null {
  const rtt = receivedAt - sentAt;
  const s = Number(reply[0]), us = Number(reply[1]);
  if (!(rtt >= 0 && rtt <= MAX_ROUND_TRIP_MS) || !Number.isFinite(s) || !Number.isFinite(us)) return null;
  return Math.round((sentAt + receivedAt) / 2 - (s * 1000 + us / 1000));
}

/** Under this again, a node said to be off is said to agree: measurements near the line differ by up to half a round
 *  trip, and the log and /healthz must not flicker with them. */
export const CLOCK_AGREES_BELOW_MS = 750;

/** Whether an offset says "skewed", given what the last one said (a line to cross going out, a lower one coming back). */
export function skewedAfter(was: boolean, offsetMs: number): boolean {
  return Math.abs(offsetMs) > (was ? CLOCK_AGREES_BELOW_MS : CLOCK_SKEW_WARN_MS);
}

/** The latest measured offset. The wall clock read is injected (a test runs a node whose clock is set ahead); how
 *  often it is measured is kept on the monotonic clock, so that fixing a wrong clock does not delay the next check. */
export class ClockCheck {
  /** Local minus Redis, ms; null until measured. */
  offsetMs: number | null = null;
  /** Off by more than CLOCK_SKEW_WARN_MS (and not yet back under CLOCK_AGREES_BELOW_MS). */
  skewed = false;
  private lastAt = -Infinity;
  private busy = false;
  /** Measurements in a row whose round trip was too long. */
  private unmeasured = 0;
  private readonly time: () => Promise<(string | number)[]>;
  private readonly now: () => number;
  private readonly log: BusLogger;

  /** `time`: Redis's TIME reply. */
  constructor(log: BusLogger, time: () => Promise<(string | number)[]>, now: () => number = Date.now) { this.log = log; this.time = time; this.now = now; }

  /** Measures when CLOCK_CHECK_EVERY_MS has passed since the last measurement, or at once with `now` (a new
   *  connection). Called on every heartbeat: one that said nothing (a round trip too long, as at a busy start) is
   *  tried again at the next. */
  maybeCheck(now = false): void {
    if (this.busy || (!now && performance.now() - this.lastAt < CLOCK_CHECK_EVERY_MS)) return;
    this.busy = true;
    void this.check().finally(() => { this.busy = false; });
  }

  async check(): Promise<void> {
    try {
      const sentAt = this.now();
      const reply = await this.time();
      const offset = clockOffset(sentAt, this.now(), reply);
      if (offset === null) {
        // Said once: a Redis always this slow to answer leaves the clock unchecked, and nothing else would say so.
        if (++this.unmeasured === UNMEASURED_WARN_AFTER) this.log.warn({ tries: this.unmeasured, maxRoundTripMs: MAX_ROUND_TRIP_MS }, 'redis: no TIME reply could measure this node\'s clock offset (each round trip over the limit, or no time in the reply); it stays unchecked until one can');
        return;
      }
      this.unmeasured = 0;
      this.offsetMs = offset;
      this.lastAt = performance.now();
      const was = this.skewed;
      this.skewed = skewedAfter(was, offset);
      // Said when it goes wrong and when it is right again: a skewed clock stays skewed for hours.
      if (this.skewed && !was) this.log.warn({ clockOffsetMs: offset, limitMs: CLOCK_SKEW_WARN_MS }, 'redis: this node\'s clock is off from Redis\'s; decisions across nodes are ordered by time (fix the clock: NTP)');
      else if (!this.skewed && was) this.log.info({ clockOffsetMs: offset }, 'redis: this node\'s clock agrees with Redis\'s again');
    } catch {
      // Redis away: the heartbeat says so; the offset stays the last one measured.
    }
  }
}
