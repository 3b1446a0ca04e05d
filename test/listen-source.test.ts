// A connection's source key from its peer address (src/listen/source.ts). The
// /64 of an IPv6 peer is read and written by hand (it runs for every new
// connection and source); ipaddr.js, which did it before, is the oracle here.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { prefix64Key, prefix64Of, prefix64Words, sourceKey } from '../src/listen/source.ts';

/** The first 64 bits as ipaddr.js reads them, or null where it refuses the text. */
function oracle(s: string): [number, number] | null {
  if (!ipaddr.IPv6.isValid(s)) return null;
  const p = ipaddr.IPv6.parse(s).parts;
  return [p[0] * 0x10000 + p[1], p[2] * 0x10000 + p[3]];
}
/** As sourceKey() wrote keys with ipaddr.js. */
const formerKey = (hi: number, lo: number) => `${new ipaddr.IPv6([hi >>> 16, hi & 0xffff, lo >>> 16, lo & 0xffff, 0, 0, 0, 0]).toString()}/64`;

/** An IPv6 address written the many ways RFC 4291 allows: full, "::" anywhere it fits, leading zeros, any case, a zone. */
const spelt = fc.record({
  groups: fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }),
  gapAt: fc.integer({ min: -1, max: 7 }), gapLen: fc.integer({ min: 1, max: 8 }),
  pad: fc.boolean(), upper: fc.boolean(), zone: fc.option(fc.constantFrom('eth0', '1', 'lo', 'ETH1', 'br-1a2b', 'eth0.100', 'veth_x', ''), { nil: undefined }),
}).map(({ groups, gapAt, gapLen, pad, upper, zone }) => {
  const hex = groups.map((g) => (pad ? g.toString(16).padStart(4, '0') : g.toString(16)));
  let text: string;
  if (gapAt < 0) text = hex.join(':');
  else {
    const len = Math.min(gapLen, 8 - gapAt);
    for (let i = gapAt; i < gapAt + len; i++) groups[i] = 0;
    text = `${hex.slice(0, gapAt).join(':')}::${hex.slice(gapAt + len).join(':')}`;
  }
  return (upper ? text.toUpperCase() : text) + (zone !== undefined ? `%${zone}` : '');
});

describe('an IPv6 peer\'s /64', () => {
  it('is read as ipaddr.js reads it, from every spelling', () => {
    fc.assert(fc.property(fc.oneof(spelt, fc.ipV6()), (s) => {
      const w = prefix64Of(s);
      if (s.includes('.')) { expect(w).toBeNull(); return; } // an IPv4 tail: left to ipaddr.js
      expect(w).toEqual(oracle(s));
    }), { numRuns: 5000 });
  });

  it('refuses what is not an address, as ipaddr.js does', () => {
    const junk = fc.stringMatching(/^[0-9a-fA-F:%.gx_ -]{0,24}$/);
    fc.assert(fc.property(junk, (s) => {
      const w = prefix64Of(s);
      if (w) expect(w).toEqual(oracle(s));
    }), { numRuns: 20000 });
    for (const bad of ['', ':', ':::', '1:::2', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::', '1:', ':1::', '::1:', 'g::', '1:2:3:4:5:6:7:8::', '\u0010::']) expect(prefix64Of(bad), bad).toBeNull();
  });

  it('is written as ipaddr.js wrote it (RFC 5952), and read back from that text only', () => {
    fc.assert(fc.property(fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(0, 1, 0x10000, 0xffff0000)), fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(0, 1, 0x10000, 0xffff0000)), (hi, lo) => {
      const key = prefix64Key(hi, lo);
      expect(key).toBe(formerKey(hi, lo));
      expect(prefix64Words(key)).toEqual([hi, lo]);
      // Another spelling of the same /64 is not the key.
      const other = key.replace('::/64', ':0:0:0:0/64');
      if (other !== key && !other.startsWith(':')) expect(prefix64Words(other)).toBeNull();
      if (key !== key.toUpperCase()) expect(prefix64Words(key.toUpperCase())).toBeNull();
    }), { numRuns: 5000 });
  });

  it('gives the same source key as before for any peer address', () => {
    const former = (a: string) => {
      if (!a.includes(':')) return a;
      if (a.startsWith('::ffff:') && a.includes('.')) return a.slice(7);
      try { const p = ipaddr.IPv6.parse(a).parts; return formerKey(p[0] * 0x10000 + p[1], p[2] * 0x10000 + p[3]); } catch { return a; }
    };
    fc.assert(fc.property(fc.oneof(spelt, fc.ipV6(), fc.ipV4(), fc.stringMatching(/^[0-9a-f:.]{0,20}$/)), (a) => {
      if (!a) return;
      expect(sourceKey(a)).toBe(former(a));
    }), { numRuns: 5000 });
  });
});
