// Statistics in the embedded store: one row per (domain, bucket) and one per
// bucket for what belongs to no domain. Rows are written as deltas added to
// what is stored, so a flush never needs to read first and a restart simply
// keeps adding to the same bucket.
import type { Db } from '../store/db.ts';
import type { StatementSync } from 'node:sqlite';
import { FIELDS, GLOBAL_FIELDS, GLOBAL_MAX_FIELDS } from './buckets.ts';
import { outboxPayload, totalsPayloads } from './cluster.ts';

/** Kept for more than 13 months (SPEC: at least 13), so last year's same month can always be billed again. */
export const DEFAULT_RETENTION_DAYS = 430;

/** Buckets per outbox row when a node pushes its whole totals again (rebuildOutbox), and per step reading them. */
const REBUILD_ROWS = 500;

export interface DomainDelta { domain: string; t: number; c: Float64Array }
export interface GlobalDelta { t: number; g: Float64Array }
type Row = Record<string, number>;

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
      ON CONFLICT (domain, t) DO UPDATE SET ${FIELDS.map((f) => `${f} = ${f} + excluded.${f}`).join(', ')}`);
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
      if (this.outbox) this.insOutbox.run(JSON.stringify(outboxPayload(domains, globals)));
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
   * The cluster's counters are gone (Redis restarted empty, epoch changed): in one transaction the outbox is
   * replaced by rows holding every stored bucket (its rows not pushed yet are in those totals already), and the new
   * epoch is recorded. Pushed, they give the cluster back this node's part exactly. Returns the rows queued.
   */
  rebuildOutbox(epoch: string): number {
    this.db.exec('BEGIN');
    try {
      this.db.exec('DELETE FROM stats_outbox');
      // Read and written in steps of REBUILD_ROWS buckets: 430 days of 3-minute buckets of many domains are millions
      // of rows, which must not all be in memory at once.
      let n = 0;
      const step = (domainRows: Row[], globalRows: Row[]) => { for (const p of totalsPayloads(domainRows, globalRows, REBUILD_ROWS)) { this.insOutbox.run(JSON.stringify(p)); n++; } };
      for (const [sql, isDomain] of [['SELECT * FROM stats_domain_bucket', true], ['SELECT * FROM stats_global_bucket', false]] as const) {
        let chunk: Row[] = [];
        for (const r of this.db.prepare(sql).iterate() as Iterable<Row>) {
          chunk.push(r);
          if (chunk.length >= REBUILD_ROWS) { step(isDomain ? chunk : [], isDomain ? [] : chunk); chunk = []; }
        }
        if (chunk.length) step(isDomain ? chunk : [], isDomain ? [] : chunk);
      }
      this.setClusterEpoch(epoch);
      this.db.exec('COMMIT');
      return n;
    } catch (e) {
      this.db.exec('ROLLBACK');
      throw e;
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

  prune(nowS: number, retentionDays = DEFAULT_RETENTION_DAYS): void {
    const before = nowS - retentionDays * 24 * 3600;
    this.db.prepare('DELETE FROM stats_domain_bucket WHERE t < ?').run(before);
    this.db.prepare('DELETE FROM stats_global_bucket WHERE t < ?').run(before);
  }
}
