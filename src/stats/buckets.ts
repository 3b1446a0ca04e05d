// 3-minute statistics buckets (SPEC.md §7): the counter layout, how one
// observed request is counted, and how stored rows become the API's JSON.
// Pure functions; the hot path only adds numbers into a preallocated array.
import type { Observation } from '../observe/observation.ts';

export const BUCKET_SECONDS = 180;

/** Counter columns of one (domain, bucket); the order is the index into a Float64Array and the SQL column list. */
export const FIELDS = [
  'req_in', 'req_passed', 'req_dropped', 'req_challenged', 'req_proxy',
  'in_bytes_in', 'in_bytes_out', 'passed_bytes_in', 'passed_bytes_out', 'dropped_bytes_in', 'dropped_bytes_out',
  'err_connect', 'err_timeout', 'err_reset', 'err_5xx',
  'status_1xx', 'status_2xx', 'status_3xx', 'status_4xx', 'status_5xx',
  'attack_seconds',
] as const;
export type Field = (typeof FIELDS)[number];

// Field indices as constants (no enums: Node strips types, erasable syntax only).
const ix = (f: Field) => FIELDS.indexOf(f);
export const F = {
  reqIn: ix('req_in'), reqPassed: ix('req_passed'), reqDropped: ix('req_dropped'), reqChallenged: ix('req_challenged'), reqProxy: ix('req_proxy'),
  inBytesIn: ix('in_bytes_in'), inBytesOut: ix('in_bytes_out'), passedBytesIn: ix('passed_bytes_in'), passedBytesOut: ix('passed_bytes_out'),
  droppedBytesIn: ix('dropped_bytes_in'), droppedBytesOut: ix('dropped_bytes_out'),
  errConnect: ix('err_connect'), errTimeout: ix('err_timeout'), errReset: ix('err_reset'), err5xx: ix('err_5xx'),
  status1xx: ix('status_1xx'), attackSeconds: ix('attack_seconds'),
} as const;

/** Counters not tied to a domain: the blacklist and what never reached a domain. */
export const GLOBAL_FIELDS = ['blacklist_size', 'accept_dropped', 'unrouted_requests', 'unrouted_bytes_in', 'unrouted_bytes_out'] as const;
export type GlobalField = (typeof GLOBAL_FIELDS)[number];
export const G = { blacklistSize: 0, acceptDropped: 1, unroutedRequests: 2, unroutedBytesIn: 3, unroutedBytesOut: 4 } as const;
/** Global fields that are samples (kept as the bucket's maximum), not sums. */
export const GLOBAL_MAX_FIELDS: ReadonlySet<GlobalField> = new Set(['blacklist_size']);

/** Start of the bucket holding a moment, in Unix seconds. */
export function bucketOf(ms: number): number {
  return Math.floor(ms / 1000 / BUCKET_SECONDS) * BUCKET_SECONDS;
}

export const newCounters = (): Float64Array => new Float64Array(FIELDS.length);
export const newGlobal = (): Float64Array => new Float64Array(GLOBAL_FIELDS.length);

/**
 * Adds one finished request to a domain's counters. "Dropped" is what the
 * filter blocked; challenged and proxy-answered requests are neither passed
 * nor dropped. Only passed traffic is legitimate (and billed).
 */
export function countInto(c: Float64Array, o: Observation): void {
  const bytesIn = o.bytesIn - (o.toldIn ?? 0); // a long upload's body was counted as it went
  c[F.reqIn]++;
  c[F.inBytesIn] += bytesIn;
  c[F.inBytesOut] += o.bytesOut;
  switch (o.outcome) {
    case 'passed': c[F.reqPassed]++; c[F.passedBytesIn] += bytesIn; c[F.passedBytesOut] += o.bytesOut; break;
    case 'blocked': c[F.reqDropped]++; c[F.droppedBytesIn] += bytesIn; c[F.droppedBytesOut] += o.bytesOut; break;
    case 'challenged': c[F.reqChallenged]++; break;
    default: c[F.reqProxy]++;
  }
  switch (o.upstreamError) {
    case 'connect': c[F.errConnect]++; break;
    case 'timeout': c[F.errTimeout]++; break;
    case 'reset': c[F.errReset]++; break;
    case '5xx': c[F.err5xx]++; break;
  }
  const cls = Math.floor(o.status / 100);
  if (cls >= 1 && cls <= 5) c[F.status1xx + cls - 1]++;
}

export interface BucketJson {
  /** Bucket start, Unix seconds. */
  t: number;
  incoming: { requests: number; bytesIn: number; bytesOut: number };
  passed: { requests: number; bytesIn: number; bytesOut: number };
  dropped: { requests: number; bytesIn: number; bytesOut: number };
  challenged: { requests: number };
  proxyAnswered: { requests: number };
  upstreamErrors: { connect: number; timeout: number; reset: number; '5xx': number };
  status: { '1xx': number; '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  /** Seconds of this bucket the domain was seen in attack mode (sampled). */
  attackSeconds: number;
  attack: boolean;
  /** Largest blacklist size sampled in this bucket (the blacklist is per source, for all domains). */
  blacklistSize: number;
  /** Connections refused at accept in this bucket (all domains: a refused connection has no Host yet). */
  acceptDropped: number;
}

type Row = Record<string, number>;

/** One stored domain row (or none) plus the bucket's global row (or none) → API bucket. */
export function toBucketJson(t: number, d: Row | undefined, g: Row | undefined): BucketJson {
  const v = (f: Field) => Number(d?.[f] ?? 0);
  return {
    t,
    incoming: { requests: v('req_in'), bytesIn: v('in_bytes_in'), bytesOut: v('in_bytes_out') },
    passed: { requests: v('req_passed'), bytesIn: v('passed_bytes_in'), bytesOut: v('passed_bytes_out') },
    dropped: { requests: v('req_dropped'), bytesIn: v('dropped_bytes_in'), bytesOut: v('dropped_bytes_out') },
    challenged: { requests: v('req_challenged') },
    proxyAnswered: { requests: v('req_proxy') },
    upstreamErrors: { connect: v('err_connect'), timeout: v('err_timeout'), reset: v('err_reset'), '5xx': v('err_5xx') },
    status: { '1xx': v('status_1xx'), '2xx': v('status_2xx'), '3xx': v('status_3xx'), '4xx': v('status_4xx'), '5xx': v('status_5xx') },
    // At most the bucket: the nodes of a cluster add up theirs (each one's is capped where it is stored).
    attackSeconds: Math.min(v('attack_seconds'), BUCKET_SECONDS),
    attack: v('attack_seconds') > 0,
    blacklistSize: Number(g?.blacklist_size ?? 0),
    acceptDropped: Number(g?.accept_dropped ?? 0),
  };
}

/** Contiguous runs of attack buckets, as [from, to) in Unix seconds, for shading graphs. */
export function attackPeriods(buckets: { t: number; attack: boolean }[]): { from: number; to: number }[] {
  const out: { from: number; to: number }[] = [];
  for (const b of buckets) {
    if (!b.attack) continue;
    const last = out[out.length - 1];
    if (last && last.to === b.t) last.to = b.t + BUCKET_SECONDS;
    else out.push({ from: b.t, to: b.t + BUCKET_SECONDS });
  }
  return out;
}
