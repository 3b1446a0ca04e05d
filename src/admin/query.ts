// Parsing of admin query parameters. Pure; a malformed value is null, which
// the routes turn into a 400 before anything is done.
import type { Config, DomainConfig } from '../config/schema.ts';
import { canonicalHost } from '../route/router.ts';

/** A domain by its name or one of its aliases, compared as routing compares a Host (route/router.ts: any case, a
 *  trailing dot, an IPv6 literal with or without brackets, in any spelling). */
export function findDomain(config: Config, name: string | null): DomainConfig | null {
  if (!name || !name.trim()) return null;
  const n = canonicalHost(name.trim());
  return config.domains.find((d) => canonicalHost(d.name) === n || d.aliases.some((a) => canonicalHost(a) === n)) ?? null;
}

/** Days in month m (1-12) of year y, proleptic Gregorian as ISO 8601 has it. */
function daysInMonth(y: number, m: number): number {
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  return m === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31;
}

/** A moment as Unix seconds (digits) or an ISO 8601 date/time; null when malformed. */
export function parseTime(v: string): number | null {
  if (/^\d{1,12}$/.test(v)) return Number(v);
  // ISO 8601, strictly (Date.parse's fallback reads trailing junk, and some forms in the server's time zone): a date,
  // or a date and a time, with an offset or none (UTC, as the buckets are). Blanks around it (a `+` in a URL) go.
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$/.exec(v.trim());
  if (!m) return null;
  const [y, mo, day, h, mi, sec] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i] ?? 0));
  // A day the month lacks (2024-02-30) is refused, not rolled over into the next month.
  if (mo < 1 || mo > 12 || day < 1 || day > daysInMonth(y, mo) || h > 23 || mi > 59 || sec > 59) return null;
  const off = m[8] && !/^[Zz]$/.test(m[8]) ? /^([+-])(\d{2}):?(\d{2})$/.exec(m[8]) : null;
  if (off && (Number(off[2]) > 23 || Number(off[3]) > 59)) return null;
  const offsetS = off ? (off[1] === '-' ? -1 : 1) * (Number(off[2]) * 3600 + Number(off[3]) * 60) : 0;
  // setUTCFullYear, not Date.UTC: that one reads the years 0-99 as 1900-1999.
  const d = new Date(0);
  d.setUTCFullYear(y, mo - 1, day);
  d.setUTCHours(h, mi, sec, 0);
  return Math.floor(d.getTime() / 1000) - offsetS;
}

export const DEFAULT_RANGE_SECONDS = 24 * 3600;
export const MAX_RANGE_SECONDS = 430 * 24 * 3600;

/** from/to of /api/stats, defaulting to the last 24 hours. */
export function parseRange(from: string | null, to: string | null, nowS: number): { from: number; to: number } | { error: string } {
  const t = to === null || to === '' ? nowS + 1 : parseTime(to);
  if (t === null) return { error: `to: "${to}" is not Unix seconds or an ISO 8601 time` };
  const f = from === null || from === '' ? t - DEFAULT_RANGE_SECONDS : parseTime(from);
  if (f === null) return { error: `from: "${from}" is not Unix seconds or an ISO 8601 time` };
  if (f > t) return { error: 'from: after to' };
  if (t - f > MAX_RANGE_SECONDS) return { error: `from/to: range longer than ${MAX_RANGE_SECONDS / 86400} days` };
  return { from: f, to: t };
}
