// Cluster-wide statistics (several nodes on one Redis, SPEC.md §9): each node
// adds its own flushed deltas into shared per-day counters, so that the totals
// and the bill of a domain served by many nodes are one query away.
//
// Exactly once, through a crash or a Redis outage: a flush writes its deltas to
// the node's own store and, in the same transaction, to an outbox row with a
// sequence number (store.ts). The outbox is pushed in order; each push adds the
// row's counters and records "node N applied seq S" in one atomic script, which
// skips a row already applied. So a node that dies between the push and the
// outbox delete, or that was cut off from Redis for an hour, neither loses nor
// doubles a count. Counting itself never leaves the process (no network on the
// request path): only these periodic aggregates do.
//
// This file is pure: the payload of an outbox row, the day keys of a range, and
// rows rebuilt from what Redis returns. The Redis side is store/redis-stats.ts.
import { FIELDS, GLOBAL_FIELDS, GLOBAL_MAX_FIELDS, toBucketJson, type BucketJson } from './buckets.ts';
import type { BillingSample } from './billing.ts';

export const DAY_SECONDS = 86_400;

/** One outbox row: only the non-zero counters, by field name (the column list may grow between versions). */
export interface OutboxPayload {
  d: { domain: string; t: number; c: Record<string, number> }[];
  g: { t: number; c: Record<string, number> }[];
}

const nonZero = (names: readonly string[], values: Float64Array): Record<string, number> => {
  const out: Record<string, number> = {};
  for (let i = 0; i < names.length; i++) if (values[i] !== 0) out[names[i]] = values[i];
  return out;
};

export function outboxPayload(domains: { domain: string; t: number; c: Float64Array }[], globals: { t: number; g: Float64Array }[]): OutboxPayload {
  return {
    d: domains.map((x) => ({ domain: x.domain, t: x.t, c: nonZero(FIELDS, x.c) })),
    g: globals.map((x) => ({ t: x.t, c: nonZero(GLOBAL_FIELDS, x.g) })),
  };
}

/** Outbox rows holding a node's whole stored totals (rows as the store keeps them: domain, t and the columns), at
 *  most `per` buckets each: what the node pushes again when the cluster's counters were lost (Redis restarted
 *  empty). Pure. */
export function totalsPayloads(domainRows: Record<string, unknown>[], globalRows: Record<string, unknown>[], per = 500): OutboxPayload[] {
  const pick = (names: readonly string[], r: Record<string, unknown>) => {
    const c: Record<string, number> = {};
    for (const n of names) { const v = Number(r[n] ?? 0); if (v !== 0) c[n] = v; }
    return c;
  };
  const out: OutboxPayload[] = [];
  const next = () => { const p: OutboxPayload = { d: [], g: [] }; out.push(p); return p; };
  let p = next();
  for (const r of domainRows) { if (p.d.length + p.g.length >= per) p = next(); p.d.push({ domain: String(r.domain), t: Number(r.t), c: pick(FIELDS, r) }); }
  for (const r of globalRows) { if (p.d.length + p.g.length >= per) p = next(); p.g.push({ t: Number(r.t), c: pick(GLOBAL_FIELDS, r) }); }
  return out.filter((x) => x.d.length + x.g.length > 0);
}

/** Redis hash fields are "<bucket start>.<column>"; max-fields (samples, not sums) are kept as the largest value. */
export const hashField = (t: number, column: string): string => `${t}.${column}`;
export const MAX_COLUMNS: readonly string[] = [...GLOBAL_MAX_FIELDS];

/** Day starts (Unix seconds, UTC) whose hashes hold buckets of [from, to). */
export function daysOf(from: number, to: number): number[] {
  const out: number[] = [];
  for (let d = Math.floor(from / DAY_SECONDS) * DAY_SECONDS; d < to; d += DAY_SECONDS) out.push(d);
  return out;
}

export const dayOf = (t: number): number => Math.floor(t / DAY_SECONDS) * DAY_SECONDS;

type Row = Record<string, number>;

/** HGETALL results of day hashes → rows per bucket start within [from, to). */
export function rowsOf(hashes: Record<string, string>[], from: number, to: number): Map<number, Row> {
  const rows = new Map<number, Row>();
  for (const h of hashes) {
    for (const [k, v] of Object.entries(h)) {
      const dot = k.indexOf('.');
      const t = Number(k.slice(0, dot));
      if (!(t >= from && t < to)) continue;
      let row = rows.get(t);
      if (!row) rows.set(t, (row = {}));
      row[k.slice(dot + 1)] = Number(v);
    }
  }
  return rows;
}

/** The cluster's buckets of a domain, as /api/stats gives the node's own. */
export function clusterBuckets(domainRows: Map<number, Row>, globalRows: Map<number, Row>): BucketJson[] {
  const ts = [...new Set([...domainRows.keys(), ...globalRows.keys()])].sort((a, b) => a - b);
  return ts.map((t) => toBucketJson(t, domainRows.get(t), globalRows.get(t)));
}

export function billingSamplesOf(domainRows: Map<number, Row>): BillingSample[] {
  return [...domainRows].map(([t, r]) => ({ t, bytesIn: r.passed_bytes_in ?? 0, bytesOut: r.passed_bytes_out ?? 0 }));
}

/** What the admin routes need of the cluster's statistics (null on a node without Redis). */
export interface ClusterStats {
  buckets(domain: string, from: number, to: number): Promise<BucketJson[]>;
  billingSamples(domain: string, from: number, to: number): Promise<BillingSample[]>;
  /** Pushes what the outbox holds (also done after every flush); resolves when pushed or failed. */
  push(): Promise<void>;
  /** Rows waiting in the outbox (Redis unreachable for that long). */
  readonly backlog: number;
  close(): Promise<void>;
}
