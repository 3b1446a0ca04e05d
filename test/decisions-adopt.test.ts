// With workers, a worker decides a ban and sends it up to the primary, which records it for the node. An operator's
// unban on the primary made after the worker decided (the worker had not heard of it yet) is the later decision: the
// worker's ban arriving afterwards used to be taken as a new ban on this node (only Redis refused it as older).
// Pure classes on an injected clock; the store is a real one in a temp folder.
import { describe, expect, it } from 'vitest';
import { Decisions } from '../src/decisions/decisions.ts';
import { WorkerBus } from '../src/cluster/worker-links.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { openStore } from '../src/store/db.ts';
import { createLogger } from '../src/log.ts';
import { tempDir } from './helpers/servers.ts';

const T = 1_800_000_000_000;
const POLICY = { repeatGrowth: 2, repeatHalfLifeHours: 24, timeScale: 1, maxSources: 10_000 };
const SRC = '192.0.2.44';
const workerBan = (since: number) => ({ ip: SRC, reason: 'rate', rule: 'flood', since, expiresAt: since + 600_000 });
const primary = () => new Decisions(POLICY, [], { store: new SqliteFilterStore(openStore(tempDir())), log: createLogger('silent') }, T);

describe('a worker\'s ban and an operator\'s unban crossing', () => {
  it('a ban decided before the unban, arriving after it, is not taken; one decided after it is', () => {
    const d = primary();
    d.manualBan(SRC, 3600, 'operator', T);
    expect(d.unban(SRC, T + 1000)).toBe(true);
    d.adopt(workerBan(T + 500));
    expect(d.has(SRC)).toBe(false);
    d.adopt(workerBan(T + 1500));
    expect(d.has(SRC)).toBe(true);
  });

  it('an unban made on another node counts the same (its time as that node says it)', () => {
    // Decisions from elsewhere come in through the bus (here the link a process hears them on).
    const bus = new WorkerBus(() => {});
    const d = new Decisions(POLICY, [], { store: new SqliteFilterStore(openStore(tempDir())), log: createLogger('silent'), bus }, T);
    d.adopt(workerBan(T));
    expect(d.has(SRC)).toBe(true);
    bus.deliver({ kind: 'unban', ip: SRC, at: T + 1000 });
    expect(d.has(SRC)).toBe(false);
    d.adopt(workerBan(T + 800));
    expect(d.has(SRC)).toBe(false);
  });
});
