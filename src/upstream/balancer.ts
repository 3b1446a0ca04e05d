// Which upstreams to try, in which order. Pure.
// Healthy main upstreams in round-robin order; when none is healthy, healthy
// backups in list order; when nothing is healthy, everything (fail open),
// because a health check can be wrong and a 502 is certain.
export interface Candidate { readonly key: string; readonly healthy: boolean }

/**
 * A counter for `rr` that stays fair when it wraps: 720720 is the least common
 * multiple of 1..16, so `rr % k` cycles evenly for every possible count of
 * healthy upstreams (a domain has at most 16).
 */
export const RR_PERIOD = 720720;

/** Rotates by rr over the healthy ones only, so a dead upstream's share is spread evenly, not handed to its neighbour. */
export function tryOrder<T extends Candidate>(main: readonly T[], backup: readonly T[], rr: number): T[] {
  const healthyMain = main.filter((u) => u.healthy);
  if (healthyMain.length) return rotate(healthyMain, rr);
  const healthyBackup = backup.filter((u) => u.healthy);
  if (healthyBackup.length) return healthyBackup;
  return rotate(main, rr).concat(backup);
}

function rotate<T>(xs: readonly T[], rr: number): T[] {
  const n = xs.length;
  if (n === 0) return [];
  const s = rr % n;
  return s === 0 ? xs.slice() : xs.slice(s).concat(xs.slice(0, s));
}
