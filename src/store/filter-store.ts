// What the filter keeps across restarts: bans, the whitelist, repeat-offender
// records, the challenge secret, and what it learned of each domain's normal
// traffic (attack-mode baseline, static paths, usual body sizes). Behind FilterStore so that a shared store
// (Redis, for several workers and nodes) can replace the embedded one. The
// sqlite implementation queues writes and flushes them in one transaction
// every second, off the request path; flush() is called on close.
import { randomBytes } from 'node:crypto';
import type { Db } from './db.ts';
import type { BanEntry } from '../decisions/blacklist.ts';
import type { WhitelistEntry } from '../decisions/lists.ts';
import type { OffenderRecord } from '../decisions/ban-time.ts';
import type { SavedAttack } from '../detect/attack-mode.ts';
import type { Decision } from '../decisions/bus.ts';
import { decisionsOf, parse } from './redis-keys.ts';

/** What the filter learned of one domain's traffic. Read back with care: each part is checked where it is restored. */
export interface LearnedDomain {
  savedAt: number;
  attack: SavedAttack;
  /** Hashes of paths the domain served as static, least recently used first. */
  staticPaths: number[];
  /** [path hash, usual body size, samples], least recently used first. */
  bodySizes: [number, number, number][];
  /** [endpoint, usual latency ms] the adaptive limit learned (limits/endpoint-baselines.ts), least recently used first. */
  endpoints?: [string, number][];
}

export interface FilterStore {
  loadBans(now: number): BanEntry[];
  putBan(e: BanEntry): void;
  deleteBan(ip: string): void;
  loadWhitelist(): WhitelistEntry[];
  putWhitelist(e: WhitelistEntry): void;
  deleteWhitelist(ip: string): void;
  loadOffenders(): Map<string, OffenderRecord>;
  putOffender(ip: string, r: OffenderRecord): void;
  loadLearned(): Map<string, LearnedDomain>;
  putLearned(domain: string, l: LearnedDomain): void;
  /** The challenge secret, created once and kept (cookies stay valid across restarts). */
  secret(): Buffer;
  /** Writes everything queued. */
  flush(): void;
  /** Forgets offender records last banned before this time (decayed to nothing), so the history stays bounded. */
  pruneOffenders(olderThan: number): void;
}

type Op = { t: 'ban'; e: BanEntry } | { t: 'unban'; ip: string } | { t: 'wl'; e: WhitelistEntry } | { t: 'unwl'; ip: string } | { t: 'off'; ip: string; r: OffenderRecord }
  | { t: 'learn'; domain: string; l: LearnedDomain };

export class SqliteFilterStore implements FilterStore {
  private readonly db: Db;
  /** Queued writes by key: only the last write of a key matters. */
  private queue = new Map<string, Op>();

  constructor(db: Db) {
    this.db = db;
    db.exec(`
      CREATE TABLE IF NOT EXISTS filter_bans (ip TEXT PRIMARY KEY, reason TEXT NOT NULL, rule TEXT NOT NULL, since INTEGER NOT NULL, expires_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS filter_whitelist (ip TEXT PRIMARY KEY, note TEXT NOT NULL, since INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS filter_offenders (ip TEXT PRIMARY KEY, count REAL NOT NULL, last_ban INTEGER NOT NULL);
      -- The hourly prune deletes by age: through this index, not a scan of every source banned in the last 20 days.
      CREATE INDEX IF NOT EXISTS filter_offenders_last_ban ON filter_offenders (last_ban);
      CREATE TABLE IF NOT EXISTS filter_learned (domain TEXT PRIMARY KEY, saved_at INTEGER NOT NULL, data TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS filter_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    `);
  }

  loadBans(now: number): BanEntry[] {
    this.db.prepare('DELETE FROM filter_bans WHERE expires_at <= ?').run(now);
    return (this.db.prepare('SELECT ip, reason, rule, since, expires_at FROM filter_bans').all() as Record<string, unknown>[])
      .map((r) => ({ ip: String(r.ip), reason: String(r.reason), rule: String(r.rule), since: Number(r.since), expiresAt: Number(r.expires_at) }));
  }

  loadWhitelist(): WhitelistEntry[] {
    return (this.db.prepare('SELECT ip, note, since FROM filter_whitelist').all() as Record<string, unknown>[])
      .map((r) => ({ ip: String(r.ip), origin: 'api' as const, note: String(r.note), since: Number(r.since) }));
  }

  loadOffenders(): Map<string, OffenderRecord> {
    const m = new Map<string, OffenderRecord>();
    for (const r of this.db.prepare('SELECT ip, count, last_ban FROM filter_offenders').all() as Record<string, unknown>[]) m.set(String(r.ip), { count: Number(r.count), lastBanAt: Number(r.last_ban) });
    return m;
  }

  loadLearned(): Map<string, LearnedDomain> {
    const m = new Map<string, LearnedDomain>();
    for (const r of this.db.prepare('SELECT domain, saved_at, data FROM filter_learned').all() as Record<string, unknown>[]) {
      // A row that does not parse is skipped: the domain learns again, as on a first start.
      try {
        const d = JSON.parse(String(r.data)) as Partial<LearnedDomain> | null;
        if (d === null || typeof d !== 'object' || d.attack === null || typeof d.attack !== 'object') continue;
        m.set(String(r.domain), { savedAt: Number(r.saved_at), attack: d.attack, staticPaths: d.staticPaths ?? [], bodySizes: d.bodySizes ?? [], endpoints: d.endpoints ?? [] });
      } catch { /* skipped */ }
    }
    return m;
  }

  putLearned(domain: string, l: LearnedDomain): void { this.queue.set('l' + domain, { t: 'learn', domain, l }); }

  putBan(e: BanEntry): void { this.queue.set('b' + e.ip, { t: 'ban', e }); }
  deleteBan(ip: string): void { this.queue.set('b' + ip, { t: 'unban', ip }); }
  putWhitelist(e: WhitelistEntry): void { this.queue.set('w' + e.ip, { t: 'wl', e }); }
  deleteWhitelist(ip: string): void { this.queue.set('w' + ip, { t: 'unwl', ip }); }
  putOffender(ip: string, r: OffenderRecord): void { this.queue.set('o' + ip, { t: 'off', ip, r }); }

  /** The secret shared by the nodes on Redis, once taken up: kept as this node's, so that a restart while Redis is out
   *  of reach signs and checks cookies with the one its visitors hold. */
  keepSecret(s: Buffer): void { this.setMeta('challenge-secret', s); }

  secret(): Buffer {
    const kept = this.meta('challenge-secret');
    if (kept) return kept;
    const s = randomBytes(32);
    this.setMeta('challenge-secret', s);
    return s;
  }

  /** One value of filter_meta (what the filter keeps that is not a row per source), or null. */
  private meta(key: string): Buffer | null {
    const row = this.db.prepare('SELECT value FROM filter_meta WHERE key = ?').get(key) as { value: Uint8Array } | undefined;
    return row ? Buffer.from(row.value) : null;
  }

  /** Sets a value of filter_meta; null deletes it. */
  private setMeta(key: string, value: Buffer | null): void {
    if (value === null) this.db.prepare('DELETE FROM filter_meta WHERE key = ?').run(key);
    else this.db.prepare('INSERT OR REPLACE INTO filter_meta (key, value) VALUES (?, ?)').run(key, value);
  }

  flush(): void {
    if (this.queue.size === 0) return;
    // The queue is emptied only once the transaction has committed: a failed
    // flush (locked or read-only file, full disk) leaves every write queued
    // for the next one. flush is synchronous, so no write can arrive between
    // this snapshot and the clear; a write of a key after a failure replaces
    // the queued one, so the newer write wins.
    const ops = [...this.queue.values()];
    const ban = this.db.prepare('INSERT OR REPLACE INTO filter_bans (ip, reason, rule, since, expires_at) VALUES (?, ?, ?, ?, ?)');
    const unban = this.db.prepare('DELETE FROM filter_bans WHERE ip = ?');
    const wl = this.db.prepare('INSERT OR REPLACE INTO filter_whitelist (ip, note, since) VALUES (?, ?, ?)');
    const unwl = this.db.prepare('DELETE FROM filter_whitelist WHERE ip = ?');
    const off = this.db.prepare('INSERT OR REPLACE INTO filter_offenders (ip, count, last_ban) VALUES (?, ?, ?)');
    const learn = this.db.prepare('INSERT OR REPLACE INTO filter_learned (domain, saved_at, data) VALUES (?, ?, ?)');
    this.db.exec('BEGIN');
    try {
      for (const op of ops) {
        if (op.t === 'ban') ban.run(op.e.ip, op.e.reason, op.e.rule, op.e.since, op.e.expiresAt);
        else if (op.t === 'unban') unban.run(op.ip);
        else if (op.t === 'wl') wl.run(op.e.ip, op.e.note, op.e.since);
        else if (op.t === 'unwl') unwl.run(op.ip);
        else if (op.t === 'off') off.run(op.ip, op.r.count, op.r.lastBanAt);
        else learn.run(op.domain, op.l.savedAt, JSON.stringify({ attack: op.l.attack, staticPaths: op.l.staticPaths, bodySizes: op.l.bodySizes, endpoints: op.l.endpoints }));
      }
      this.db.exec('COMMIT');
      this.queue.clear();
    } catch (e) {
      // A failed rollback (no transaction left, or the handle closed) must not hide why the write failed.
      try { this.db.exec('ROLLBACK'); } catch { /* the original error says more */ }
      throw e;
    }
  }

  /** The decisions a RedisBus had not written yet (RedisBusOptions.queue): kept across a restart while Redis is away. */
  loadRedisQueue(): Decision[] {
    const ds = parse<unknown>(this.meta('redis-queue')?.toString('utf8') ?? '[]');
    return Array.isArray(ds) ? decisionsOf(ds) : [];
  }

  saveRedisQueue(ds: Decision[]): void { this.setMeta('redis-queue', ds.length ? Buffer.from(JSON.stringify(ds)) : null); }

  /** The Redis epoch this node last reconciled with (RedisBusOptions.epoch). */
  loadRedisEpoch(): string | null { return this.meta('redis-epoch')?.toString('utf8') ?? null; }

  saveRedisEpoch(e: string): void { this.setMeta('redis-epoch', Buffer.from(e)); }

  /** The TLS session ticket key of the period it was last used in (listen/ticket-keys.ts); one is kept, the last. */
  loadTicketKey(): { period: number; key: Buffer } | null {
    const v = this.meta('tls-ticket-key');
    return v && v.length > 8 ? { period: v.readDoubleBE(0), key: v.subarray(8) } : null;
  }

  saveTicketKey(period: number, key: Buffer): void {
    const v = Buffer.alloc(8 + key.length);
    v.writeDoubleBE(period, 0);
    key.copy(v, 8);
    this.setMeta('tls-ticket-key', v);
  }

  /** Drops offender records that have decayed to nothing, so the table stays bounded. */
  pruneOffenders(olderThan: number): void {
    this.db.prepare('DELETE FROM filter_offenders WHERE last_ban < ?').run(olderThan);
  }
}
