// A whitelist entry lifts every ban it covers. Each lifted ban used to swap in a
// freshly built BlockList of all the bans left (a BlockList cannot forget), so
// whitelisting a range over n bans cost n rebuilds of up to n entries: 2,000
// bans lifted by a /16 held the event loop ~6 s, 10,000 ~150 s, on the process
// that accepts every connection (and again on every worker and node that takes
// the decisions). The listeners' list now looks the bans up and is never rebuilt; the lifting is one pass. Pure
// classes on an injected clock; the store is a real one in a temp folder.
import { describe, expect, it } from 'vitest';
import { Decisions } from '../src/decisions/decisions.ts';
import { LocalBus, type Decision, type DecisionBus } from '../src/decisions/bus.ts';
import { parseWhitelistEntry } from '../src/decisions/lists.ts';
import { WorkerBus } from '../src/cluster/worker-links.ts';
import { openStore } from '../src/store/db.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { createLogger } from '../src/log.ts';
import { tempDir } from './helpers/servers.ts';

const T = 1_800_000_000_000;
const POLICY = { repeatGrowth: 2, repeatHalfLifeHours: 24, timeScale: 1, maxSources: 10_000 };
const N = 300;
const inRange = (i: number) => `10.50.${i >> 8}.${i & 255}`;

function decisions(bus: DecisionBus) {
  const d = new Decisions(POLICY, [], { store: new SqliteFilterStore(openStore(tempDir())), log: createLogger('silent'), bus }, T);
  return { d, list: d.blacklist.blockList };
}

function range(text: string) {
  const p = parseWhitelistEntry(text);
  if (!p.ok) throw new Error(p.error);
  return p.value;
}

describe('whitelisting a range over many bans', () => {
  it('lifts them all at once, here and where the decisions are taken', () => {
    const published: Decision[] = [];
    const bus: DecisionBus = Object.assign(new LocalBus(), { publish: (d: Decision) => { published.push(d); } });
    const here = decisions(bus);
    const links = new WorkerBus(() => {});
    const there = decisions(links);
    const outside = '10.60.0.1';
    for (let i = 0; i < N; i++) here.d.ban(inRange(i), 'flood', 'x', 1800, T + i);
    here.d.ban(outside, 'flood', 'x', 1800, T);
    for (const d of published) links.deliver(d);
    expect(there.d.size).toBe(N + 1);
    published.length = 0;

    here.d.addWhitelist(range('10.50.0.0/16'), 'partner', T + N);
    for (const d of published) links.deliver(d);

    for (const side of [here, there]) {
      expect(side.d.bans().map((b) => b.ip)).toEqual([outside]);
      // The listeners' one list, as it was at start (it looks the bans up: nothing to rebuild nor swap).
      const list = side.list;
      expect(list.check(inRange(7), 'ipv4')).toBe(false);
      expect(list.check(inRange(N - 1), 'ipv4')).toBe(false);
      expect(list.check(outside, 'ipv4')).toBe(true);
    }
    // Redis is told of every lifted ban (a node started later must not bring one back).
    expect(published.filter((d) => d.kind === 'unban')).toHaveLength(N);
  });
});

// Each entry loaded used to rebuild the whitelist's lists of every entry before it: 1,000 API entries took 1.5 s
// at every start (and in every worker, and again at each join of a Redis snapshot), 3,000 12 s. They are read in
// with one rebuild (`version` counts the rebuilds: sources re-check their verdict at each).
describe('whitelist entries read in at start', () => {
  it('are taken with one rebuild of the lists, and cover what they say', () => {
    const store = new SqliteFilterStore(openStore(tempDir()));
    const texts = Array.from({ length: N }, (_, i) => inRange(i));
    for (const ip of texts) store.putWhitelist({ ip, origin: 'api', note: '', since: T });
    store.flush();
    const d = new Decisions(POLICY, ['192.0.2.0/24'], { store, log: createLogger('silent') }, T);
    expect(d.whitelist.version).toBeLessThanOrEqual(2);
    expect(d.whitelistEntries()).toHaveLength(N + 1);
    expect(d.isWhitelisted(inRange(N - 1))).toBe(true);
    expect(d.isWhitelisted('192.0.2.9')).toBe(true);
    expect(d.isWhitelisted(inRange(N))).toBe(false);
  });
});
