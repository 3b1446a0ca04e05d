// Billing (SPEC.md §7) as a pure function: max(in, out) of passed traffic in
// bit/s per 3-minute sample, 30 highest discarded, 31st highest billed.
import { describe, it, expect } from 'vitest';
import { bill, monthRange, monthOf, sampleBps } from '../src/stats/billing.ts';

const JAN = Date.UTC(2025, 0, 1) / 1000;
const FEB = Date.UTC(2025, 1, 1) / 1000;

describe('billing', () => {
  it('parses months strictly (UTC)', () => {
    expect(monthRange('2025-01')).toEqual({ from: JAN, to: FEB });
    expect(monthRange('2024-12')).toEqual({ from: Date.UTC(2024, 11, 1) / 1000, to: JAN });
    for (const bad of ['2025-13', '2025-00', '2025-1', '25-01', '2025-01-01', '', 'jan']) expect(monthRange(bad)).toBeNull();
    expect(monthOf(Date.UTC(2025, 6, 31, 23, 59))).toBe('2025-07');
  });

  it('bandwidth of a sample is max(bytes in, bytes out) in bit/s over 180 s', () => {
    expect(sampleBps({ t: 0, bytesIn: 180, bytesOut: 90 })).toBe(8);
    expect(sampleBps({ t: 0, bytesIn: 10, bytesOut: 1800 })).toBe(80);
  });

  it('discards the 30 highest samples and bills the 31st highest', () => {
    // 40 samples: sample i carries (i + 1) * 1800 bytes out → (i + 1) * 80 bit/s.
    const samples = Array.from({ length: 40 }, (_, i) => ({ t: JAN + i * 180, bytesIn: 5, bytesOut: (i + 1) * 1800 }));
    const b = bill('2025-01', samples, FEB * 1000 + 1);
    expect(b.samplesWithTraffic).toBe(40);
    expect(b.billedBps).toBe(10 * 80); // 40 - 30 = the 10th smallest
    expect(b.billedSample).toEqual({ t: JAN + 9 * 180, bps: 800 });
    expect(b.top).toHaveLength(31);
    expect(b.top[0]).toEqual({ rank: 1, t: JAN + 39 * 180, bps: 3200, discarded: true });
    expect(b.top[30]).toMatchObject({ rank: 31, bps: 800, discarded: false });
    expect(b.complete).toBe(true);
    expect(b.slots).toBe(31 * 24 * 20);
    expect(b.samples.map((s) => s.t)).toEqual(samples.map((s) => s.t));
  });

  it('a burst of 30 samples costs nothing: that is what the discarded samples are for', () => {
    const quiet = Array.from({ length: 100 }, (_, i) => ({ t: JAN + i * 180, bytesIn: 1800, bytesOut: 0 })); // 80 bit/s
    const burst = Array.from({ length: 30 }, (_, i) => ({ t: JAN + (200 + i) * 180, bytesIn: 0, bytesOut: 1_800_000_000 }));
    expect(bill('2025-01', [...quiet, ...burst], FEB * 1000).billedBps).toBe(80);
  });

  it('with 30 or fewer samples carrying traffic, the 31st highest is an idle slot: 0', () => {
    const samples = Array.from({ length: 30 }, (_, i) => ({ t: JAN + i * 180, bytesIn: 1800, bytesOut: 1800 }));
    const b = bill('2025-01', samples, JAN * 1000 + 3600_000);
    expect(b.billedBps).toBe(0);
    expect(b.billedSample).toBeNull();
    expect(b.top.every((s) => s.discarded)).toBe(true);
    expect(b.complete).toBe(false);
    expect(b.slots).toBe(20);
  });

  it('ignores samples outside the month and idle samples', () => {
    const samples = [
      ...Array.from({ length: 31 }, (_, i) => ({ t: JAN + i * 180, bytesIn: 1800, bytesOut: 0 })),
      { t: JAN - 180, bytesIn: 9e9, bytesOut: 9e9 }, { t: FEB, bytesIn: 9e9, bytesOut: 0 }, { t: JAN + 99 * 180, bytesIn: 0, bytesOut: 0 },
    ];
    const b = bill('2025-01', samples, FEB * 1000);
    expect(b.samplesWithTraffic).toBe(31);
    expect(b.billedBps).toBe(80);
  });

  it('refuses a malformed month', () => {
    expect(() => bill('2025-1', [], 0)).toThrow(/month/);
  });
});
