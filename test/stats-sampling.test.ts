// Blacklist size and attack-mode periods come from the filter's snapshot,
// sampled by the statistics timer. The filter here is a stand-in whose
// snapshot the test sets; the statistics module and its store are real.
import { describe, it, expect } from 'vitest';
import { createStats } from '../src/stats/index.ts';
import { openStore } from '../src/store/db.ts';
import { loadConfigObject } from '../src/config/load.ts';
import { createLogger } from '../src/log.ts';
import { Upstreams } from '../src/upstream/upstreams.ts';
import type { FilterSnapshot } from '../src/detect/filter.ts';
import type { Observation } from '../src/observe/observation.ts';
import { attackPeriods } from '../src/stats/buckets.ts';
import { tempDir } from './helpers/servers.ts';

const obs = (o: Partial<Observation>): Observation => ({
  domain: 'a.test', source: '127.0.0.1', client: '127.0.0.1', method: 'GET', path: '/', status: 200, bytesIn: 100, bytesOut: 1000,
  durationMs: 1, contentType: null, outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: true, queuedMs: 0, upstreamMs: 1, ...o,
});

describe('stats sampling of the filter', () => {
  it('records blacklist size per bucket and shades attack buckets; blocked traffic is dropped and not billed', async () => {
    const r = loadConfigObject({ log: { level: 'silent' }, state: { dir: tempDir() }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:9'] }] }, {});
    if (!r.ok) throw new Error(r.problems.join('\n'));
    const db = openStore(r.config.state.dir);
    let snap: FilterSnapshot = { blacklistSize: 0, underAttack: [], droppedConnections: 0, counters: {} };
    const filter = { snapshot: () => snap };
    const T0 = Date.UTC(2025, 2, 10, 12, 0, 0); // a bucket start
    let now = T0;
    const stats = createStats(r.config, { db, log: createLogger('silent'), filter, upstreams: new Upstreams(), config: () => r.config, queues: new Map() }, { now: () => now, flushIntervalMs: 3600_000 });

    stats.record(obs({}));
    stats.flush();
    now += 180_000; // second bucket: attack, blacklist grows, attack requests blocked
    snap = { blacklistSize: 12, underAttack: ['a.test'], droppedConnections: 0, counters: {} };
    for (let i = 0; i < 5; i++) stats.record(obs({ outcome: 'blocked', status: 0, bytesIn: 500, bytesOut: 0 }));
    stats.record(obs({}));
    now += 5_000;
    stats.flush();
    snap = { blacklistSize: 30, underAttack: ['a.test'], droppedConnections: 0, counters: {} };
    now += 5_000;
    stats.flush();
    now += 180_000; // third bucket: over
    snap = { blacklistSize: 2, underAttack: [], droppedConnections: 0, counters: {} };
    stats.flush();
    // Connections refused at accept reach the stats as the filter's counter.
    snap = { blacklistSize: 2, underAttack: [], droppedConnections: 4, counters: {} };
    stats.flush();

    const b = stats.buckets('a.test', T0 / 1000, T0 / 1000 + 3 * 180);
    expect(b.map((x) => x.t)).toEqual([T0 / 1000, T0 / 1000 + 180, T0 / 1000 + 360]);
    expect(b.map((x) => x.attack)).toEqual([false, true, false]);
    expect(b[1].attackSeconds).toBeGreaterThanOrEqual(10);
    expect(b.map((x) => x.blacklistSize)).toEqual([0, 30, 2]);
    expect(b[1].dropped).toEqual({ requests: 5, bytesIn: 2500, bytesOut: 0 });
    expect(b[1].incoming.requests).toBe(6);
    expect(b[2].acceptDropped).toBe(4);
    expect(attackPeriods(b)).toEqual([{ from: T0 / 1000 + 180, to: T0 / 1000 + 360 }]);
    // Only the passed request of the attack bucket is in its billing sample.
    const bill = stats.billing('a.test', '2025-03');
    expect(bill.samples.map((s) => [s.t, s.bytesIn])).toEqual([[T0 / 1000, 100], [T0 / 1000 + 180, 100]]);
    await stats.close();
    db.close();
  });
});
