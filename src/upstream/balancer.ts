// Which upstreams to try, in which order. Pure.
// Healthy main upstreams in round-robin order (then the healthy backups, for
// a failover only); when none is healthy, healthy backups in list order; when nothing is healthy, everything (fail open),
// because a health check can be wrong and a 502 is certain. Among those, one
// with a free connection goes first: a request given to an upstream whose
// every connection is busy would wait in undici's queue (first come first
// served, untimed), where the proxy's fair queue cannot see it.
export interface Candidate {
  readonly key: string; readonly healthy: boolean;
  /** Every connection of its pool is in use (upstream.maxConnections). */
  readonly full?: boolean;
}

/**
 * A counter for `rr` that stays fair when it wraps: 720720 is the least common
 * multiple of 1..16, so `rr % k` cycles evenly for every possible count of
 * healthy upstreams (a domain has at most 16).
 */
export const RR_PERIOD = 720720;

/** Rotates by rr over the healthy ones only, so a dead upstream's share is spread evenly, not handed to its neighbour. */
export function tryOrder<T extends Candidate>(main: readonly T[], backup: readonly T[], rr: number): T[] {
  const healthyMain = main.filter((u) => u.healthy);
  const healthyBackup = backup.filter((u) => u.healthy);
  // The healthy backups after them, as the last resort of a failover: mains that died a moment ago are still marked
  // healthy until their checks (or fall failed requests) say so, and a request that fails on every one of them moves
  // on to a backup rather than getting a 502. A request goes to a backup only so, never for want of room on a main.
  if (healthyMain.length) return roomFirst(rotate(healthyMain, rr)).concat(roomFirst(healthyBackup));
  if (healthyBackup.length) return roomFirst(healthyBackup);
  return roomFirst(rotate(main, rr).concat(backup));
}

/** Whether one of the upstreams tryOrder would offer has a free connection (the same tiers, no array made: it is
 *  asked before every request goes upstream). */
export function hasRoom(main: readonly Candidate[], backup: readonly Candidate[]): boolean {
  const m = healthyRoom(main);
  if (m !== null) return m;
  const b = healthyRoom(backup);
  if (b !== null) return b;
  return main.some((u) => !u.full) || backup.some((u) => !u.full);
}

/** Room among the healthy ones of a tier; null when none is healthy (the next tier is tried). */
function healthyRoom(xs: readonly Candidate[]): boolean | null {
  let healthy = false;
  for (const u of xs) if (u.healthy) { if (!u.full) return true; healthy = true; }
  return healthy ? false : null;
}

/** The full ones last (a retry may still reach them), the others in their order. */
function roomFirst<T extends Candidate>(xs: T[]): T[] {
  if (xs.length < 2 || !xs[0].full) return xs;
  return xs.filter((u) => !u.full).concat(xs.filter((u) => u.full));
}

function rotate<T>(xs: readonly T[], rr: number): T[] {
  const n = xs.length;
  if (n === 0) return [];
  const s = rr % n;
  return s === 0 ? xs.slice() : xs.slice(s).concat(xs.slice(0, s));
}
