// Which bans go when the blacklist is full (filter.maxBans): those that would
// end soonest lose the least protection. An operator's bans go only once no
// automatic one is left: they were asked for by name. Pure; it reads the
// blacklist's expiry wheel (the keys ending in each second), so it visits the
// seconds in order and stops once it has enough: no sort of the bans, however
// their ends are spread (a histogram over the spread of ends put a flood of
// 5-minute bans beside one 8-hour ban into one bucket, and sorted it whole).

export interface Expiring { ip: string; rule: string; expiresAt: number }

/** The n live entries (or all, when fewer) that end soonest, to the second, automatic before manual. `slotMs`: the
 *  wheel's slot width; a key in a slot before its entry's own is a ban since replaced with a later end, passed over. */
export function soonestToGo<E extends Expiring>(wheel: ReadonlyMap<number, readonly string[]>, bans: ReadonlyMap<string, E>, n: number, slotMs: number): E[] {
  const out: E[] = [];
  if (n <= 0) return out;
  const slots = [...wheel.keys()].sort((a, b) => a - b);
  const taken = new Set<string>();
  for (const manual of [false, true]) {
    for (const s of slots) {
      for (const key of wheel.get(s)!) {
        const e = bans.get(key);
        if (!e || (e.rule === 'manual') !== manual || Math.ceil(e.expiresAt / slotMs) > s || taken.has(key)) continue;
        taken.add(key);
        out.push(e);
        if (out.length >= n) return out;
      }
    }
  }
  return out;
}
