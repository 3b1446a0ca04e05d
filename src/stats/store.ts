// Statistics in the embedded store: one row per (domain, bucket) and one per
// bucket for what belongs to no domain. Rows are written as deltas added to
// what is stored, so a flush never needs to read first and a restart simply
// keeps adding to the same bucket.
import type { Db } from '../store/db.ts';
import type { StatementSync } from 'node:sqlite';
import { BUCKET_SECONDS, FIELDS, GLOBAL_FIELDS, GLOBAL_MAX_FIELDS } from './buckets.ts';
import { outboxPayload, totalsPayloads } from './cluster.ts';

/** Kept for more than 13 months (SPEC: at least 13), so last year's same month can always be billed again. */
export const DEFAULT_RETENTION_DAYS = 430;
/** Buckets the hourly prune deletes per step (a step of 5,000 rows takes a few ms; the event loop runs in between). */
const PRUNE_STEP_ROWS = 5000;

/** Buckets per outbox row when a node pushes its whole totals again (rebuildOutbox), and per step reading them. */
const REBUILD_ROWS = 500;
/** Rows of the old outbox deleted per step of a rebuild (one that holds a rebuild never pushed is ~0.5 ms a row). */
const OLD_ROWS_PER_STEP = 10;

export interface DomainDelta { domain: string; t: number; c: Float64Array }
export interface GlobalDelta { t: number; g: Float64Array }
type Row = Record<string, number>;

/** How far a rebuild has read: domains not begun, the one being read and its last bucket, the global table's. */
interface Rebuild { pending: Set<string>; domain: string | null; t: number; globalT: number; globalDone: boolean }
/** A bucket the rebuild will still read (a delta to it is in what it reads). */
const unreadDomain = (r: Rebuild, domain: string, t: number): boolean => r.pending.has(domain) || (domain === r.domain && t > r.t);

export class StatsStore {
  private readonly db: Db;
  private readonly upsertDomain: StatementSync;
  private readonly upsertGlobal: StatementSync;
  private readonly selDomain: StatementSync;
  private readonly selGlobal: StatementSync;
  private readonly selBilling: StatementSync;
  private readonly insOutbox: StatementSync;
  /** With Redis: every write also leaves an outbox row for the cluster's totals (cluster.ts), in the same transaction. */
  outbox = false;
  /** Where a rebuild of the outbox is (rebuildOutbox), while one runs. */
  private rebuild: Rebuild | null = null;

  constructor(db: Db) {
    this.db = db;
    const cols = (fs: readonly string[]) => fs.map((f) => `${f} INTEGER NOT NULL DEFAULT 0`).join(', ');
    db.exec(`CREATE TABLE IF NOT EXISTS stats_domain_bucket (domain TEXT NOT NULL, t INTEGER NOT NULL, ${cols(FIELDS)}, PRIMARY KEY (domain, t)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS stats_global_bucket (t INTEGER PRIMARY KEY, ${cols(GLOBAL_FIELDS)});
      CREATE TABLE IF NOT EXISTS stats_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS stats_node (id TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS stats_cluster (epoch TEXT NOT NULL);`);
    this.insOutbox = db.prepare('INSERT INTO stats_outbox (body) VALUES (?)');
    const qs = (n: number) => Array(n).fill('?').join(', ');
    this.upsertDomain = db.prepare(`INSERT INTO stats_domain_bucket (domain, t, ${FIELDS.join(', ')}) VALUES (?, ?, ${qs(FIELDS.length)})
      ON CONFLICT (domain, t) DO UPDATE SET ${FIELDS.map((f) => (f === 'attack_seconds' ? `${f} = MIN(${BUCKET_SECONDS}, ${f} + excluded.${f})` : `${f} = ${f} + excluded.${f}`)).join(', ')}`);
    this.upsertGlobal = db.prepare(`INSERT INTO stats_global_bucket (t, ${GLOBAL_FIELDS.join(', ')}) VALUES (?, ${qs(GLOBAL_FIELDS.length)})
      ON CONFLICT (t) DO UPDATE SET ${GLOBAL_FIELDS.map((f) => GLOBAL_MAX_FIELDS.has(f) ? `${f} = MAX(${f}, excluded.${f})` : `${f} = ${f} + excluded.${f}`).join(', ')}`);
    this.selDomain = db.prepare('SELECT * FROM stats_domain_bucket WHERE domain = ? AND t >= ? AND t < ? ORDER BY t');
    this.selGlobal = db.prepare('SELECT * FROM stats_global_bucket WHERE t >= ? AND t < ? ORDER BY t');
    this.selBilling = db.prepare('SELECT t, passed_bytes_in AS bytesIn, passed_bytes_out AS bytesOut FROM stats_domain_bucket WHERE domain = ? AND t >= ? AND t < ?');
  }

  /** Adds the deltas in one transaction: all of them or none (the caller keeps them to retry). */
  write(domains: DomainDelta[], globals: GlobalDelta[]): void {
    if (!domains.length && !globals.length) return;
    this.db.exec('BEGIN');
    try {
      for (const d of domains) this.upsertDomain.run(d.domain, d.t, ...d.c);
      for (const g of globals) this.upsertGlobal.run(g.t, ...g.g);
      if (this.outbox) {
        // During a rebuild, what goes to a bucket it has not read yet reaches the cluster with what it reads.
        const r = this.rebuild;
        const ds = r ? domains.filter((d) => !unreadDomain(r, d.domain, d.t)) : domains;
        const gs = r ? globals.filter((g) => !(!r.globalDone && g.t > r.globalT)) : globals;
        if (ds.length || gs.length) this.insOutbox.run(JSON.stringify(outboxPayload(ds, gs)));
      }
      this.db.exec('COMMIT');
    } catch (e) {
      this.db.exec('ROLLBACK');
      throw e;
    }
  }

  /** Rows of [from, to) (Unix seconds, bucket starts). */
  domainRows(domain: string, from: number, to: number): Row[] { return this.selDomain.all(domain, from, to) as Row[]; }
  globalRows(from: number, to: number): Row[] { return this.selGlobal.all(from, to) as Row[]; }
  billingSamples(domain: string, from: number, to: number): { t: number; bytesIn: number; bytesOut: number }[] {
    return this.selBilling.all(domain, from, to) as { t: number; bytesIn: number; bytesOut: number }[];
  }

  /** The oldest outbox rows, in the order they must be applied. */
  outboxRows(limit: number): { seq: number; body: string }[] {
    return this.db.prepare('SELECT seq, body FROM stats_outbox ORDER BY seq LIMIT ?').all(limit) as { seq: number; body: string }[];
  }

  outboxDone(upToSeq: number): void { this.db.prepare('DELETE FROM stats_outbox WHERE seq <= ?').run(upToSeq); }
  get outboxSize(): number { return Number((this.db.prepare('SELECT count(*) AS n FROM stats_outbox').get() as { n: number }).n); }

  /** The epoch of the Redis this node's outbox was pushed to (null: none yet). */
  clusterEpoch(): string | null {
    return (this.db.prepare('SELECT epoch FROM stats_cluster').get() as { epoch: string } | undefined)?.epoch ?? null;
  }

  /**
   * The cluster's counters are gone (Redis restarted empty, epoch changed): the outbox is replaced by rows holding
   * every stored bucket (its rows not pushed yet are in those totals already), and the new epoch is recorded once
   * all are in. Pushed, they give the cluster back this node's part exactly. Returns the rows queued.
   *
   * A full store (430 days of 3-minute buckets, many domains) is millions of rows and takes seconds to read: it is
   * read domain by domain in steps of REBUILD_ROWS buckets, with `pause()` (a turn of the event loop) between them,
   * so that the proxy goes on serving and saving. A delta saved meanwhile to a bucket not read yet is in what will
   * be read: no outbox row carries it (`unread`); to one already read, it is queued as usual. The caller pushes
   * nothing until this returns: a crash before the end leaves the old epoch, and the next start rebuilds anew.
   */
  async rebuildOutbox(epoch: string, pause: () => Promise<void> = async () => {}): Promise<number> {
    const oldRows = this.db.prepare('DELETE FROM stats_outbox WHERE seq IN (SELECT seq FROM stats_outbox WHERE seq <= ? LIMIT ?)');
    // Every row queued until now is in the totals about to be read: they go, a few per step (a row of a rebuild
    // never pushed is large, ~0.5 ms to delete).
    const upTo = Number((this.db.prepare('SELECT coalesce(max(seq), 0) AS s FROM stats_outbox').get() as { s: number }).s);
    const domains = this.domains();
    const r: Rebuild = { pending: new Set(domains), domain: null, t: -Infinity, globalT: -Infinity, globalDone: false };
    this.rebuild = r;
    const readDomain = this.db.prepare(`SELECT * FROM stats_domain_bucket WHERE domain = ? AND t > ? ORDER BY t LIMIT ${REBUILD_ROWS}`);
    const readGlobal = this.db.prepare(`SELECT * FROM stats_global_bucket WHERE t > ? ORDER BY t LIMIT ${REBUILD_ROWS}`);
    let n = 0;
    const queue = (domainRows: Row[], globalRows: Row[]) => {
      this.db.exec('BEGIN');
      try {
        for (const p of totalsPayloads(domainRows, globalRows, REBUILD_ROWS)) { this.insOutbox.run(JSON.stringify(p)); n++; }
        oldRows.run(upTo, OLD_ROWS_PER_STEP);
        this.db.exec('COMMIT');
      } catch (e) { this.db.exec('ROLLBACK'); throw e; }
    };
    try {
      for (const domain of domains) {
        r.pending.delete(domain);
        r.domain = domain;
        r.t = -Infinity;
        for (;;) {
          const rows = readDomain.all(domain, r.t) as Row[];
          // Read and noted in one turn: from here, a delta to these buckets is queued as usual.
          if (rows.length) r.t = Number(rows[rows.length - 1].t);
          if (rows.length < REBUILD_ROWS) r.domain = null; // done: every later delta is queued
          queue(rows, []);
          await pause();
          if (r.domain === null) break;
        }
      }
      for (;;) {
        const rows = readGlobal.all(r.globalT) as Row[];
        if (rows.length) r.globalT = Number(rows[rows.length - 1].t);
        if (rows.length < REBUILD_ROWS) r.globalDone = true;
        queue([], rows);
        await pause();
        if (r.globalDone) break;
      }
      while (Number(oldRows.run(upTo, OLD_ROWS_PER_STEP).changes) > 0) await pause();
      this.setClusterEpoch(epoch);
      return n;
    } finally {
      this.rebuild = null;
    }
  }

  setClusterEpoch(epoch: string): void {
    this.db.prepare('DELETE FROM stats_cluster').run();
    this.db.prepare('INSERT INTO stats_cluster (epoch) VALUES (?)').run(epoch);
  }

  /** This node's name in the cluster's "applied up to" record: kept in the store, so that a restart continues its sequence. */
  nodeId(fresh: () => string): string {
    const row = this.db.prepare('SELECT id FROM stats_node').get() as { id: string } | undefined;
    if (row) return row.id;
    const id = fresh();
    this.db.prepare('INSERT INTO stats_node (id) VALUES (?)').run(id);
    return id;
  }

  /** The domains with stored buckets, each found by a seek in the primary key (a DISTINCT would read every row: tens of ms in one go). */
  private domains(): string[] {
    const nextDomain = this.db.prepare('SELECT domain FROM stats_domain_bucket WHERE domain > ? ORDER BY domain LIMIT 1');
    const domains: string[] = [];
    for (let d = nextDomain.get('') as { domain: string } | undefined; d; d = nextDomain.get(d.domain) as { domain: string } | undefined) domains.push(d.domain);
    return domains;
  }

  /**
   * Deletes the buckets past retention, in steps of at most `rowsPerStep` rows, yielding after each (the caller
   * lets the event loop run between them: after a long downtime, or a retention lowered, the backlog is millions of
   * rows, and one transaction held the proxy for as long as it took). The key is (domain, t): `WHERE t < ?` alone
   * reads the whole table (SCAN), so each step deletes a range of one domain's key, up to the step's last bucket
   * (found through the key as well). No index on t: it would cost every new bucket a write.
   */
  *pruneSteps(nowS: number, retentionDays = DEFAULT_RETENTION_DAYS, rowsPerStep = PRUNE_STEP_ROWS): Generator<void> {
    const before = nowS - retentionDays * 24 * 3600;
    const edge = this.db.prepare('SELECT t FROM stats_domain_bucket WHERE domain = ? AND t < ? ORDER BY t LIMIT 1 OFFSET ?');
    const old = this.db.prepare('DELETE FROM stats_domain_bucket WHERE domain = ? AND t < ?');
    for (const domain of this.domains()) {
      for (;;) {
        const next = edge.get(domain, before, rowsPerStep) as { t: number } | undefined;
        old.run(domain, next ? next.t : before);
        yield;
        if (!next) break;
      }
    }
    const gEdge = this.db.prepare('SELECT t FROM stats_global_bucket WHERE t < ? ORDER BY t LIMIT 1 OFFSET ?');
    const gOld = this.db.prepare('DELETE FROM stats_global_bucket WHERE t < ?');
    for (;;) {
      const next = gEdge.get(before, rowsPerStep) as { t: number } | undefined;
      gOld.run(next ? next.t : before);
      yield;
      if (!next) break;
    }
  }

  /** Every step of pruneSteps at once (tests, tools). */
  prune(nowS: number, retentionDays = DEFAULT_RETENTION_DAYS): void {
    for (const _ of this.pruneSteps(nowS, retentionDays)) { /* each step commits by itself */ }
  }
}
