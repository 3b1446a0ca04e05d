// Which bans go when the blacklist is full (filter.maxBans): those that would
// end soonest lose the least protection. An operator's bans go only once no
// automatic one is left: they were asked for by name. Pure; linear in the bans
// (three passes, a histogram of expiries), no sort of the whole list: the cap
// is met while a flood is being banned, in the process that accepts.

export interface Expiring { ip: string; rule: string; expiresAt: number }

const BUCKETS = 1024;

/** The n entries (or all, when fewer) that end soonest, automatic before manual. */
export function soonestToGo<E extends Expiring>(bans: ReadonlyMap<string, E>, n: number): E[] {
  if (n <= 0) return [];
  const auto = soonest(bans, n, false);
  return auto.length >= n ? auto : auto.concat(soonest(bans, n - auto.length, true));
}

function soonest<E extends Expiring>(bans: ReadonlyMap<string, E>, n: number, manual: boolean): E[] {
  const mine = (e: E) => (e.rule === 'manual') === manual;
  let lo = Infinity, hi = -Infinity, count = 0;
  for (const e of bans.values()) if (mine(e)) { count++; if (e.expiresAt < lo) lo = e.expiresAt; if (e.expiresAt > hi) hi = e.expiresAt; }
  if (count <= n) return [...bans.values()].filter(mine);
  const width = (hi - lo) / BUCKETS || 1;
  const bucketOf = (t: number) => Math.min(BUCKETS - 1, Math.floor((t - lo) / width));
  const counts = new Uint32Array(BUCKETS);
  for (const e of bans.values()) if (mine(e)) counts[bucketOf(e.expiresAt)]++;
  // The bucket where the n-th soonest falls: everything before it goes, and the soonest part of it.
  let edge = 0, before = 0;
  while (before + counts[edge] < n) before += counts[edge++];
  const out: E[] = [], atEdge: E[] = [];
  for (const e of bans.values()) {
    if (!mine(e)) continue;
    const b = bucketOf(e.expiresAt);
    if (b < edge) out.push(e); else if (b === edge) atEdge.push(e);
  }
  atEdge.sort((a, b) => a.expiresAt - b.expiresAt);
  for (let i = 0; i < n - before; i++) out.push(atEdge[i]);
  return out;
}
