// Decimal sizes and durations that are a whole number of bytes or milliseconds
// are taken as exactly that (README "Sizes and durations": only "a fraction
// that is not a whole byte, millisecond or second" is refused). They were
// multiplied in floating point: 4.1 × 1e6 is 4 099 999.9999999995, so "4.1MB"
// and "2.2h" were refused as fractions, "1.5KB" taken (failed on the code
// before 2026-11-29). Generated with fast-check.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseSize, parseDuration } from '../src/config/units.ts';

describe('decimal sizes and durations, exactly', () => {
  it('a decimal size that is a whole number of bytes is accepted as exactly that many bytes (generated)', () => {
    const units: [string, number][] = [['KB', 1e3], ['MB', 1e6], ['GB', 1e9], ['KiB', 1024], ['MiB', 1024 ** 2]];
    fc.assert(fc.property(fc.integer({ min: 0, max: 999 }), fc.integer({ min: 1, max: 9 }), fc.constantFrom(...units), (whole, tenth, [u, mult]) => {
      if ((mult * tenth) % 10 !== 0) return; // not a whole number of bytes: refusing it is right
      const bytes = whole * mult + (mult * tenth) / 10; // exact, in integers
      expect(parseSize(`${whole}.${tenth}${u}`)).toEqual({ ok: true, value: bytes });
    }), { numRuns: 2000 });
    expect(parseSize('4.1MB')).toEqual({ ok: true, value: 4_100_000 });
  });

  it('a decimal duration that is a whole number of ms is accepted as exactly that many ms (generated)', () => {
    const units: [string, number][] = [['s', 1000], ['min', 60_000], ['h', 3_600_000]];
    fc.assert(fc.property(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 1, max: 9 }), fc.constantFrom(...units), (whole, tenth, [u, mult]) => {
      const ms = whole * mult + (mult * tenth) / 10;
      expect(parseDuration(`${whole}.${tenth}${u}`, 'ms')).toEqual({ ok: true, value: ms });
    }), { numRuns: 2000 });
    expect(parseDuration('2.2h', 'ms')).toEqual({ ok: true, value: 7_920_000 });
  });

});
