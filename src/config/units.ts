// Strict parsing of numbers written by people: sizes ("10MB", "64 KiB"),
// durations ("10s", "1 minute", "1m30s") and plain counts. convict's own
// coercion is parseInt, which reads "10MB" as 10 and "10s" as 10 ms and calls
// it valid; here a value either means exactly what it says or is refused with
// the reason. Pure functions, no convict.

export type Parsed = { ok: true; value: number } | { ok: false; why: string };

const fail = (why: string): Parsed => ({ ok: false, why });

/**
 * Sizes above this are refused: no request, budget or buffer of a proxy is
 * sensibly larger, and it keeps every size far inside the safe integers.
 */
export const MAX_SIZE_BYTES = 2 ** 40;
/** Node timers fire at once (with a warning) past 2^31-1 ms, so a longer duration would mean "no time at all". */
export const MAX_DURATION_MS = 2 ** 31 - 1;

// SI prefixes are powers of 1000 and IEC ones powers of 1024 (IEC 80000-13);
// a bare k/m/g is refused because nginx reads "10m" as 10 MiB and others as 10 MB.
const SIZE_UNITS: Record<string, number> = {
  b: 1, byte: 1, bytes: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
};
const AMBIGUOUS_SIZE = new Set(['k', 'm', 'g', 't']);

const DURATION_UNITS: Record<string, number> = {
  ms: 1, msec: 1, millisecond: 1, milliseconds: 1,
  s: 1000, sec: 1000, secs: 1000, second: 1000, seconds: 1000,
  m: 60_000, min: 60_000, mins: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hr: 3_600_000, hrs: 3_600_000, hour: 3_600_000, hours: 3_600_000,
  d: 86_400_000, day: 86_400_000, days: 86_400_000,
};

const PLAIN = /^\s*\d+\s*$/;
const PART = /(\d+(?:\.\d+)?)\s*([a-z]*)\s*/gy;

/** Splits "1m 30s" into [['1', 'm'], ['30', 's']] (the numbers as written); null when anything else is in the text. */
function parts(text: string): [string, string][] | null {
  const s = text.trim().toLowerCase();
  if (!s) return null;
  const out: [string, string][] = [];
  PART.lastIndex = 0;
  while (PART.lastIndex < s.length) {
    const at = PART.lastIndex;
    const m = PART.exec(s);
    if (!m || m.index !== at || m[0].length === 0) return null;
    out.push([m[1], m[2]]);
  }
  return out;
}

/** A decimal as written ("4.1") as an exact fraction [41, 10]: 4.1 × 1e6 in floating point is 4 099 999.9999999995, so
 *  "4.1MB" and "2.2h" would read as fractions of a byte or a millisecond. */
function decimal(text: string): [bigint, bigint] {
  const [i, f = ''] = text.split('.');
  return [BigInt(i + f), 10n ** BigInt(f.length)];
}

function bounded(n: number, max: number, what: string, unit: string): Parsed {
  if (!Number.isFinite(n)) return fail('must be a number');
  if (n < 0) return fail('must not be negative');
  if (n > max) return fail(`${what} above the limit of ${max}${unit ? ' ' + unit : ''}`);
  if (!Number.isInteger(n)) return fail(`must be a whole number${unit ? ' of ' + unit : ''}`);
  return { ok: true, value: n };
}

/** A size in bytes: a whole number, or text such as "10MB", "64 KiB", "1024". */
export function parseSize(v: unknown): Parsed {
  if (typeof v === 'number') return bounded(v, MAX_SIZE_BYTES, 'size', 'bytes');
  if (typeof v !== 'string') return fail('must be a number of bytes or a size such as "10MB" or "10MiB"');
  const p = parts(v);
  if (!p || p.length !== 1) return fail(`${JSON.stringify(v)} is not a size (write e.g. 1048576, "10MB" or "10MiB")`);
  const [n, unit] = p[0];
  if (AMBIGUOUS_SIZE.has(unit)) return fail(`${JSON.stringify(v)} is ambiguous: write ${n}${unit.toUpperCase()}B (powers of 1000) or ${n}${unit.toUpperCase()}iB (powers of 1024)`);
  const mult = unit === '' ? 1 : SIZE_UNITS[unit];
  if (mult === undefined) return fail(`${JSON.stringify(v)}: unknown size unit "${unit}" (B, KB, MB, GB, KiB, MiB, GiB)`);
  const [num, den] = decimal(n);
  const bytes = num * BigInt(mult);
  if (bytes % den !== 0n) return fail(`${JSON.stringify(v)} is not a whole number of bytes`);
  return bounded(Number(bytes / den), MAX_SIZE_BYTES, `${JSON.stringify(v)} is`, 'bytes');
}

/**
 * A duration in `unit` (ms or s): a whole number of that unit, or text such
 * as "10s", "1 minute", "1m30s" (a bare number in text is in `unit` too).
 */
export function parseDuration(v: unknown, unit: 'ms' | 's'): Parsed {
  const scale = unit === 'ms' ? 1 : 1000;
  const max = Math.floor(MAX_DURATION_MS / scale);
  const unitName = unit === 'ms' ? 'milliseconds' : 'seconds';
  if (typeof v === 'number') return bounded(v, max, 'duration', unitName);
  if (typeof v !== 'string') return fail(`must be a number of ${unitName} or a duration such as "10s" or "1 minute"`);
  const p = parts(v);
  if (!p) return fail(`${JSON.stringify(v)} is not a duration (write e.g. 1500, "10s", "1 minute" or "1m30s")`);
  if (p.length === 1 && p[0][1] === '') return bounded(Number(p[0][0]), max, `${JSON.stringify(v)} is`, unitName);
  // Summed exactly, over one denominator (the finest decimal written).
  const fr = p.map(([n]) => decimal(n));
  const den = fr.reduce((d, [, x]) => (x > d ? x : d), 1n);
  let ms = 0n;
  for (const [i, [, u]] of p.entries()) {
    const mult = DURATION_UNITS[u];
    if (mult === undefined) return fail(`${JSON.stringify(v)}: ${u ? `unknown duration unit "${u}"` : 'every number needs a unit'} (ms, s, min, h, d)`);
    ms += fr[i][0] * BigInt(mult) * (den / fr[i][1]);
  }
  const per = den * BigInt(scale);
  if (ms % per !== 0n) return fail(`${JSON.stringify(v)} is not a whole number of ${unitName}`);
  return bounded(Number(ms / per), max, `${JSON.stringify(v)} is`, unitName);
}

/** A count: a whole number >= 0, as a number or as digits only (from the environment). */
export function parseCount(v: unknown): Parsed {
  if (typeof v === 'string' && PLAIN.test(v)) v = Number(v);
  if (typeof v !== 'number') return fail(`${JSON.stringify(v)} is not a whole number`);
  return bounded(v, Number.MAX_SAFE_INTEGER, 'count', '');
}

/** A finite decimal number, as a number or as text that is only a number. */
export function parseDecimal(v: unknown): Parsed {
  if (typeof v === 'string' && /^\s*-?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?\s*$/i.test(v)) v = Number(v);
  if (typeof v !== 'number' || !Number.isFinite(v)) return fail(`${JSON.stringify(v)} is not a number`);
  return { ok: true, value: v };
}

/**
 * Which parser a numeric key takes, by its name: the schema names every size
 * `…Bytes` / `…BytesPerSec` and every duration `…Ms` / `…Seconds`, so keys
 * added later get the right parsing without being listed here.
 */
export function numericKind(key: string): 'size' | 'ms' | 's' | 'count' {
  if (/Bytes(PerSec)?$/.test(key)) return 'size';
  if (/Ms$/.test(key)) return 'ms';
  if (/Seconds$/.test(key)) return 's';
  return 'count';
}
