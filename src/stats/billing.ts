// Billing (SPEC.md §7): per domain and calendar month (UTC), each 3-minute
// sample's legitimate bandwidth is max(bytes in, bytes out) of *passed*
// traffic in bit/s; the 30 highest samples are discarded and the 31st highest
// is billed. Dropped, challenged and proxy-answered traffic is never in a
// sample, so attack traffic is never billed. Pure functions.
import { BUCKET_SECONDS } from './buckets.ts';

export const DISCARDED_SAMPLES = 30;

export interface BillingSample { t: number; bytesIn: number; bytesOut: number }

export interface Bill {
  month: string;
  /** The month as [from, to) in Unix seconds, UTC. */
  from: number;
  to: number;
  bucketSeconds: number;
  /** 3-minute slots of the month elapsed so far (all of them once the month is over). */
  slots: number;
  complete: boolean;
  samplesWithTraffic: number;
  discarded: number;
  /** The billed figure, bit/s. 0 when fewer than 31 slots carried passed traffic:
   *  then the 31st highest slot is an idle one. */
  billedBps: number;
  billedSample: { t: number; bps: number } | null;
  /** The 30 discarded samples and the billed one, highest first. */
  top: { rank: number; t: number; bps: number; discarded: boolean }[];
  /** Every slot with passed traffic, in time order: the samples behind the figure. */
  samples: { t: number; bytesIn: number; bytesOut: number; bps: number }[];
}

/** "YYYY-MM" → the month as [from, to) Unix seconds (UTC), or null when malformed. */
export function monthRange(month: string): { from: number; to: number } | null {
  const m = /^(\d{4})-(\d{2})$/.exec(month);
  if (!m) return null;
  const y = Number(m[1]);
  const mo = Number(m[2]);
  if (y < 1970 || mo < 1 || mo > 12) return null;
  return { from: Date.UTC(y, mo - 1, 1) / 1000, to: Date.UTC(y, mo, 1) / 1000 };
}

export const monthOf = (ms: number): string => new Date(ms).toISOString().slice(0, 7);

/** Legitimate bandwidth of one sample, bit/s. */
export const sampleBps = (s: BillingSample): number => (Math.max(s.bytesIn, s.bytesOut) * 8) / BUCKET_SECONDS;

export function bill(month: string, samples: BillingSample[], nowMs: number): Bill {
  const range = monthRange(month);
  if (!range) throw new Error(`malformed month "${month}", expected YYYY-MM`);
  const nowS = nowMs / 1000;
  const end = Math.min(range.to, Math.max(range.from, nowS));
  const slots = Math.ceil((end - range.from) / BUCKET_SECONDS);
  const inMonth = samples
    .filter((s) => s.t >= range.from && s.t < range.to && (s.bytesIn > 0 || s.bytesOut > 0))
    .sort((a, b) => a.t - b.t)
    .map((s) => ({ t: s.t, bytesIn: s.bytesIn, bytesOut: s.bytesOut, bps: sampleBps(s) }));
  // Highest first; equal bandwidth ties go to the earlier sample so that the result is stable.
  const ranked = [...inMonth].sort((a, b) => b.bps - a.bps || a.t - b.t);
  const billed = ranked[DISCARDED_SAMPLES] ?? null;
  return {
    month, from: range.from, to: range.to, bucketSeconds: BUCKET_SECONDS,
    slots, complete: nowS >= range.to,
    samplesWithTraffic: inMonth.length,
    discarded: DISCARDED_SAMPLES,
    billedBps: billed ? billed.bps : 0,
    billedSample: billed ? { t: billed.t, bps: billed.bps } : null,
    top: ranked.slice(0, DISCARDED_SAMPLES + 1).map((s, i) => ({ rank: i + 1, t: s.t, bps: s.bps, discarded: i < DISCARDED_SAMPLES })),
    samples: inMonth,
  };
}
