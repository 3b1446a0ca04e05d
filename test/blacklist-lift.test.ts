// An unban or an expiry must stop refusing its source at accept at once, and must not cost a rebuild of the whole
// BlockList each time: a net.BlockList cannot forget an entry, and rebuilding one of 100,000 bans takes ~0.6 s on
// this machine, so with bans expiring every second the accepting process was held most of each second. A lifted
// entry is now checked against the live bans when the list matches it, and the list is rebuilt only once as many
// entries were lifted as are live (each removal pays for its share of one rebuild).
import { describe, expect, it } from 'vitest';
import type net from 'node:net';
import { Blacklist } from '../src/decisions/blacklist.ts';

const v4 = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
const v6 = (i: number) => `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`;
const ban = (ip: string, expiresAt = 1e12) => ({ ip, reason: 'x', rule: 'flood', since: 0, expiresAt });

describe('blacklist: lifting bans', () => {
  it('unbans and expiries take effect at once, with a rebuild only now and then, never one per removal', () => {
    const installed: net.BlockList[] = [];
    const b = new Blacklist((l) => installed.push(l));
    const N = 4000;
    for (let i = 0; i < N; i++) { b.add(ban(v4(i), 1000 + (i % 10))); b.add(ban(v6(i))); }
    const list = () => b.blockList;
    // One by one, as the admin API and the bus lift them.
    for (let i = 0; i < N; i += 2) expect(b.remove(v4(i))).toBe(true);
    expect(installed.length).toBeLessThanOrEqual(1);
    for (let i = 0; i < 40; i++) expect(list().check(v4(i), 'ipv4'), v4(i)).toBe(i % 2 === 1);
    // Expiries, in batches as the tick finds them.
    for (let t = 1000; t < 1010; t++) b.expire(t);
    expect(b.size).toBe(N);
    expect(installed.length).toBeLessThanOrEqual(2);
    for (let i = 0; i < 40; i++) expect(list().check(v4(i), 'ipv4')).toBe(false);
    // The IPv6 /64s, looked up by any address inside them; lift half.
    for (let i = 0; i < N; i += 2) b.remove(v6(i));
    expect(installed.length).toBeLessThanOrEqual(3);
    expect(list().check('2001:db8:0:1:abcd::9', 'ipv6')).toBe(true);
    expect(list().check('2001:db8:0:2:abcd::9', 'ipv6')).toBe(false);
    expect(list().check('::ffff:10.0.0.1', 'ipv6')).toBe(false);
    // Banned again after its lifting: refused again.
    b.add(ban(v4(2)));
    b.add(ban('2001:db8:0:2::/64'));
    expect(list().check(v4(2), 'ipv4')).toBe(true);
    expect(list().check('2001:db8:0:2::77', 'ipv6')).toBe(true);
    expect(list().check('::ffff:10.0.0.2', 'ipv6')).toBe(true);
    // Whatever was rebuilt, the list in force refuses exactly the live bans.
    for (let i = 0; i < 200; i++) {
      expect(list().check(v4(i), 'ipv4')).toBe(b.has(v4(i)));
      expect(list().check(v6(i).replace('::/64', '::1'), 'ipv6')).toBe(b.has(v6(i)));
    }
  });

  it('what it refused is counted once per refusal; a lifted source is not counted', () => {
    const b = new Blacklist(() => {});
    b.add(ban('192.0.2.1'));
    b.add(ban('192.0.2.2'));
    b.remove('192.0.2.1');
    b.blockList.check('192.0.2.1', 'ipv4');
    b.blockList.check('192.0.2.2', 'ipv4');
    expect(b.tally.refused).toBe(1);
  });
});
