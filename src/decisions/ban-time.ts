// Pure decisions: whether a verdict is enforced, how long a ban lasts, how a
// repeat offender's record decays. No clock (now is passed in), no I/O.

export type Mode = 'auto' | 'always' | 'off';

export const MIN_BAN_SECONDS = 5 * 60;
export const MAX_BAN_SECONDS = 8 * 60 * 60;

/** auto: blocks only while the domain is under attack, except rules marked 'always'; always: whenever; off: never. */
export function enforced(mode: Mode, rule: 'attack' | 'always', underAttack: boolean): boolean {
  if (mode === 'off') return false;
  if (mode === 'always') return true;
  return rule === 'always' || underAttack;
}

export interface OffenderRecord { count: number; lastBanAt: number }

export interface BanParams {
  /** Each earlier (decayed) offence multiplies the ban time by this. */
  growth: number;
  /** The offence count halves every this many ms without a new ban. */
  halfLifeMs: number;
  /** Test and lab knob: scales ban times after clamping (1 in production). */
  timeScale: number;
}

/** The offence count today: earlier bans weigh less as time passes. */
export function decayedOffences(rec: OffenderRecord | undefined, now: number, halfLifeMs: number): number {
  if (!rec || rec.count <= 0) return 0;
  const age = Math.max(0, now - rec.lastBanAt);
  return rec.count * Math.pow(0.5, age / halfLifeMs);
}

/** Ban time in ms: the attack type's base, grown for a repeat offender, never below 5 min nor above 8 h (then time-scaled). */
export function banDurationMs(baseSeconds: number, offences: number, p: BanParams): number {
  const grown = baseSeconds * Math.pow(p.growth, offences);
  const clamped = Math.min(MAX_BAN_SECONDS, Math.max(MIN_BAN_SECONDS, grown));
  return Math.round(clamped * 1000 * p.timeScale);
}

/** The record after a new ban. */
export function recordOffence(rec: OffenderRecord | undefined, now: number, halfLifeMs: number): OffenderRecord {
  return { count: decayedOffences(rec, now, halfLifeMs) + 1, lastBanAt: now };
}
