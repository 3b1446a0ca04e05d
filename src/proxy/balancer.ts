// Which upstreams to try, in which order. Pure.
// Healthy main upstreams in round-robin order; when none is healthy, healthy
// backups in list order; when nothing is healthy, everything (fail open),
// because a health check can be wrong and a 502 is certain.
export interface Candidate { readonly key: string; readonly healthy: boolean }

export function tryOrder<T extends Candidate>(main: readonly T[], backup: readonly T[], rr: number): T[] {
  const n = main.length;
  const healthyMain: T[] = [];
  for (let i = 0; i < n; i++) { const u = main[(rr + i) % n]; if (u.healthy) healthyMain.push(u); }
  if (healthyMain.length) return healthyMain;
  const healthyBackup = backup.filter((u) => u.healthy);
  if (healthyBackup.length) return healthyBackup;
  const all: T[] = [];
  for (let i = 0; i < n; i++) all.push(main[(rr + i) % n]);
  return all.concat(backup);
}
