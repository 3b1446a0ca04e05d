// SqliteFilterStore.flush on a real SQLite file (issue 9, "found on the way"):
// a flush that fails — here because another connection holds the write lock,
// as a second process or a backup tool would — keeps its queued writes, so
// that the next flush (the filter retries every second) saves them. A newer
// write of the same key made in between still wins.
import { afterEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { openStore, type Db } from '../src/store/db.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { tempDir } from './helpers/servers.ts';
import pino from 'pino';
import { createFilter } from '../src/app/build-filter.ts';
import { saveBansAtOnce } from '../src/app/edge.ts';
import { LocalBus } from '../src/decisions/bus.ts';
import { loadConfigObject } from '../src/config/load.ts';

const ban = (ip: string, reason: string) => ({ ip, reason, rule: 'manual', since: 1000, expiresAt: Date.now() + 3_600_000 });

describe('a failed flush keeps the queued writes', () => {
  const open: DatabaseSync[] = [];
  afterEach(() => { for (const d of open.splice(0)) d.close(); });

  function setup(): { db: Db; store: SqliteFilterStore; locker: DatabaseSync } {
    const dir = tempDir();
    const db = openStore(dir);
    // Fail at once on the lock instead of after the 2 s busy wait.
    db.exec('PRAGMA busy_timeout = 0');
    const store = new SqliteFilterStore(db);
    const locker = new DatabaseSync(path.join(dir, 'scrubber.db'));
    open.push(db, locker);
    return { db, store, locker };
  }

  it('a write queued before a failed flush is saved by the next one', () => {
    const { store, locker } = setup();
    store.putBan(ban('10.0.0.1', 'first'));
    store.putWhitelist({ ip: '10.1.0.0/16', origin: 'api', note: 'office', since: 1000 });
    locker.exec('BEGIN IMMEDIATE');
    expect(() => store.flush()).toThrow(/locked|busy/i);
    locker.exec('ROLLBACK');
    store.flush();
    expect(store.loadBans(Date.now()).map((b) => b.ip)).toEqual(['10.0.0.1']);
    expect(store.loadWhitelist().map((w) => w.ip)).toEqual(['10.1.0.0/16']);
  });

  it('a newer write of the same key made after the failure wins', () => {
    const { store, locker } = setup();
    store.putBan(ban('10.0.0.2', 'old'));
    store.putBan(ban('10.0.0.3', 'to be lifted'));
    store.putBan(ban('10.0.0.4', 'untouched'));
    locker.exec('BEGIN IMMEDIATE');
    expect(() => store.flush()).toThrow();
    locker.exec('ROLLBACK');
    store.putBan(ban('10.0.0.2', 'new'));
    store.deleteBan('10.0.0.3');
    store.flush();
    const bans = store.loadBans(Date.now());
    expect(bans.map((b) => [b.ip, b.reason]).sort()).toEqual([['10.0.0.2', 'new'], ['10.0.0.4', 'untouched']]);
  });

  it('bans while the store is locked: one failed save and one error line a second, not one per ban; all saved after', async () => {
    const { db, store, locker } = setup();
    const r = loadConfigObject({}, {});
    if (!r.ok) throw new Error(r.problems.join('; '));
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => { lines.push(l); } });
    const filter = createFilter(r.config, { db, log, bus: new LocalBus(), store, secret: Buffer.alloc(32, 1) });
    saveBansAtOnce(filter);
    locker.exec('BEGIN IMMEDIATE');
    // Twenty bans, each in a callback of its own (as a flood's requests are): each would be a save of its own.
    for (let i = 1; i <= 20; i++) {
      filter.decisions.ban(`10.9.0.${i}`, 'flood', 'test', 300, Date.now());
      await new Promise((res) => setImmediate(res));
    }
    expect(lines.filter((l) => l.includes('filter state not saved')).length).toBe(1);
    locker.exec('ROLLBACK');
    expect(filter.save()).toBe(true);
    expect(store.loadBans(Date.now()).length).toBe(20);
  });
});
