// The blacklist and the BlockList the listeners consult at accept.
// Lifting: an unban or an expiry must stop refusing its source at the next accept. The list used to mirror the bans
// in Node's native lists, which cannot forget an address: lifted entries were confirmed against the live bans and the
// list rebuilt now and then, a rebuild that held the accepting process 2.4 s with a million bans. It now looks the
// bans up and is never rebuilt nor swapped.
// The cap (filter.maxBans): a flood of ever new sources (IPv6 /64s, each a source) used to grow the bans, and memory,
// without end (SPEC §6: memory stays bounded whatever the number of distinct sources). Past the cap the bans that
// would end soonest are lifted early, automatic before manual, and forgotten by the store too.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import pino from 'pino';
import { Blacklist, type BanEntry } from '../src/decisions/blacklist.ts';
import { parseBlacklistAddress } from '../src/decisions/lists.ts';
import { Decisions } from '../src/decisions/decisions.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { openStore } from '../src/store/db.ts';
import { tempDir } from './helpers/servers.ts';

const v4 = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
const v6 = (i: number) => `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`;
const ban = (ip: string, expiresAt = 1e12, rule = 'flood'): BanEntry => ({ ip, reason: 'x', rule, since: 0, expiresAt });

describe('blacklist: lifting bans', () => {
  it('unbans and expiries take effect at the next accept, on the one list the listeners hold', () => {
    const b = new Blacklist();
    const list = b.blockList;
    const N = 4000;
    for (let i = 0; i < N; i++) { b.add(ban(v4(i), 1000 + (i % 10))); b.add(ban(v6(i))); }
    for (let i = 0; i < N; i += 2) expect(b.remove(v4(i))).toBe(true);
    for (let i = 0; i < 40; i++) expect(list.check(v4(i), 'ipv4'), v4(i)).toBe(i % 2 === 1);
    // Lifted at the first whole second at or after its end (one pass per second, over what ends in it).
    for (let t = 1000; t < 1010; t++) b.expire(t);
    expect(b.size).toBe(N + N / 2); // the odd ones left end at 1001–1009: in the second that ends at 2000
    b.expire(2000);
    expect(b.size).toBe(N);
    for (let i = 0; i < 40; i++) expect(list.check(v4(i), 'ipv4')).toBe(false);
    // The IPv6 /64s, looked up by any address inside them; lift half.
    for (let i = 0; i < N; i += 2) b.remove(v6(i));
    expect(list.check('2001:db8:0:1:abcd::9', 'ipv6')).toBe(true);
    expect(list.check('2001:db8:0:2:abcd::9', 'ipv6')).toBe(false);
    expect(list.check('::ffff:10.0.0.1', 'ipv6')).toBe(false);
    // Banned again after its lifting: refused again.
    b.add(ban(v4(2)));
    b.add(ban('2001:db8:0:2::/64'));
    expect(list.check(v4(2), 'ipv4')).toBe(true);
    expect(list.check('2001:db8:0:2::77', 'ipv6')).toBe(true);
    expect(list.check('::ffff:10.0.0.2', 'ipv6')).toBe(true);
    expect(b.blockList).toBe(list);
    for (let i = 0; i < 200; i++) {
      expect(list.check(v4(i), 'ipv4')).toBe(b.has(v4(i)));
      expect(list.check(v6(i).replace('::/64', '::1'), 'ipv6')).toBe(b.has(v6(i)));
    }
  });

  it('expiry, against a plain model: bans added, replaced, lifted, the clock moving by ms and by hours, forth and back (generated)', () => {
    // The blacklist visits only the slots (seconds) that ended; the model scans every ban.
    const op = fc.oneof(
      fc.record({ k: fc.constant('add' as const), ip: fc.integer({ min: 0, max: 40 }), ends: fc.integer({ min: -3000, max: 20_000 }) }),
      fc.record({ k: fc.constant('remove' as const), ip: fc.integer({ min: 0, max: 40 }) }),
      // The clock may also go back (a correction after a wrong start): what was banned since must not end early.
      fc.record({ k: fc.constant('tick' as const), by: fc.oneof(fc.integer({ min: 0, max: 1500 }), fc.constant(3600_000), fc.integer({ min: -5000, max: -1 }), fc.constant(-3600_000)) }),
    );
    fc.assert(fc.property(fc.array(op, { maxLength: 200 }), fc.integer({ min: 0, max: 1e12 }), (ops, start) => {
      const b = new Blacklist();
      const model = new Map<string, number>();
      let now = start;
      for (const o of ops) {
        if (o.k === 'add') { b.add(ban(v4(o.ip), now + o.ends)); model.set(v4(o.ip), now + o.ends); }
        else if (o.k === 'remove') expect(b.remove(v4(o.ip))).toBe(model.delete(v4(o.ip)));
        else {
          now += o.by;
          // Lifted at the first whole second at or after its end.
          const want = [...model].filter(([, t]) => Math.ceil(t / 1000) * 1000 <= now).map(([ip]) => ip).sort();
          for (const ip of want) model.delete(ip);
          expect(b.expire(now).map((e) => e.ip).sort()).toEqual(want);
        }
        expect(b.size).toBe(model.size);
      }
    }), { numRuns: 400 });
  });

  it('the keys of lifted bans do not pile up under a flood the cap trims', () => {
    const b = new Blacklist(100);
    for (let i = 0; i < 100_000; i++) { b.add(ban(v6(i), 1e12 + i)); b.trim(); }
    expect(b.size).toBeLessThanOrEqual(100);
    expect((b as unknown as { wheeled: number }).wheeled).toBeLessThanOrEqual(2 * 100 + 1024 + 1);
  });

  it('what it refused is counted once per refusal; a lifted source is not counted', () => {
    const b = new Blacklist();
    b.add(ban('192.0.2.1'));
    b.add(ban('192.0.2.2'));
    b.remove('192.0.2.1');
    b.blockList.check('192.0.2.1', 'ipv4');
    b.blockList.check('192.0.2.2', 'ipv4');
    expect(b.tally.refused).toBe(1);
  });
});

describe('blacklist: the cap (filter.maxBans)', () => {
  it('a flood of new /64s past the cap: the list stays within it, keeping the longest bans and every manual one', () => {
    const cap = 1000;
    const b = new Blacklist(cap);
    for (let i = 0; i < 5; i++) b.add(ban(v4(i), 10 + i, 'manual'));
    const lifted: BanEntry[] = [];
    // Expiries in an order unrelated to arrival (a repeat offender banned later may be held longer, or shorter).
    const expiry = (i: number) => 1_000_000 + ((i * 7919) % 50_000);
    for (let i = 0; i < 20 * cap; i++) {
      b.add(ban(v6(i), expiry(i)));
      const now = b.trim();
      expect(b.size).toBeLessThanOrEqual(cap);
      if (!now.length) continue;
      // What went would have ended no later than anything automatic that stays (to the second).
      const sec = (t: number) => Math.ceil(t / 1000);
      const keptSoonest = Math.min(...b.all().filter((e) => e.rule !== 'manual').map((e) => sec(e.expiresAt)));
      expect(Math.max(...now.map((e) => sec(e.expiresAt)))).toBeLessThanOrEqual(keptSoonest);
      lifted.push(...now);
    }
    expect(b.size).toBeGreaterThanOrEqual(cap * 0.99 - 1);
    for (let i = 0; i < 5; i++) expect(b.has(v4(i))).toBe(true);
    expect(lifted.length + b.size).toBe(20 * cap + 5);
    // A lifted source is no longer refused at accept.
    const gone = lifted[lifted.length - 1];
    expect(b.blockList.check(gone.ip.replace('::/64', '::5'), 'ipv6')).toBe(false);
  });

  it('trim: the soonest to end go, to the second, automatic before manual, however the ends are spread (generated)', () => {
    const sec = (e: BanEntry) => Math.ceil(e.expiresAt / 1000);
    fc.assert(fc.property(
      fc.array(fc.record({ t: fc.oneof(fc.integer({ min: 0, max: 600_000 }), fc.constant(8 * 3600_000)), manual: fc.boolean(), again: fc.option(fc.integer({ min: 0, max: 600_000 })) }), { maxLength: 300 }),
      fc.integer({ min: 1, max: 200 }),
      (rows, cap) => {
        const b = new Blacklist(cap);
        rows.forEach((r, i) => {
          b.add(ban(v4(i), r.t, r.manual ? 'manual' : 'flood'));
          // Some replaced with another end (their first key stays in the wheel, passed over).
          if (r.again !== null) b.add(ban(v4(i), r.again, r.manual ? 'manual' : 'flood'));
        });
        const before = b.size;
        const gone = b.trim();
        const want = before <= cap ? 0 : before - cap + Math.floor(cap / 100);
        expect(gone).toHaveLength(Math.min(want, before));
        expect(new Set(gone.map((e) => e.ip)).size).toBe(gone.length);
        expect(b.size).toBe(before - gone.length);
        const kept = b.all();
        const auto = (xs: BanEntry[]) => xs.filter((e) => e.rule !== 'manual');
        const manual = (xs: BanEntry[]) => xs.filter((e) => e.rule === 'manual');
        if (manual(gone).length) expect(auto(kept)).toHaveLength(0);
        for (const [g, k] of [[auto(gone), auto(kept)], [manual(gone), manual(kept)]]) {
          if (g.length && k.length) expect(Math.max(...g.map(sec))).toBeLessThanOrEqual(Math.min(...k.map(sec)));
        }
      },
    ), { numRuns: 300 });
  });

  it('trim: a flood of 5-minute bans beside one 8-hour ban is trimmed without sorting the flood', () => {
    const b = new Blacklist(50_000);
    b.add(ban('192.0.2.1', 8 * 3600_000));
    for (let i = 0; i < 60_000; i++) { b.add(ban(v6(i), 300_000 + ((i * 7919) % 1000) * 1000)); b.trim(); }
    expect(b.size).toBeLessThanOrEqual(50_000);
    expect(b.has('192.0.2.1')).toBe(true);
  });

  it('Decisions: what the cap lifts is gone from the store, counted, and said once in the log', () => {
    const dir = tempDir();
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (s: string) => { lines.push(s); } });
    const POLICY = { repeatGrowth: 2, repeatHalfLifeHours: 24, timeScale: 1, maxSources: 10_000, maxBans: 100 };
    const T = 1_800_000_000_000;
    const d = new Decisions(POLICY, [], { store: new SqliteFilterStore(openStore(dir)), log }, T);
    d.manualBan('192.0.2.1', 60, 'operator', T);
    for (let i = 0; i < 300; i++) d.ban(v6(i), 'flood', 'x', 300 + i, T + i);
    expect(d.size).toBeLessThanOrEqual(100);
    expect(d.has('192.0.2.1')).toBe(true);
    expect(d.bansEvicted).toBe(301 - d.size);
    expect(lines.filter((l) => l.includes('filter.maxBans'))).toHaveLength(1);
    // The longest bans are the ones kept.
    expect(d.has(v6(299))).toBe(true);
    expect(d.has(v6(0))).toBe(false);
    // A restart on the same store brings back what was kept, not what was lifted.
    d.expire(T + 1000);
    (d as unknown as { deps: { store: SqliteFilterStore } }).deps.store.flush();
    const again = new Decisions({ ...POLICY, maxBans: 1000 }, [], { store: new SqliteFilterStore(openStore(dir)), log }, T + 1000);
    expect(again.size).toBe(d.size);
    expect(again.has(v6(0))).toBe(false);
    // A lower cap at a reload lifts at once.
    again.reconfigure({ ...POLICY, maxBans: 10 }, [], T + 2000);
    expect(again.size).toBeLessThanOrEqual(10);
    expect(again.has('192.0.2.1')).toBe(true);
  });
});

describe('offender history', () => {
  it('is pruned while the proxy runs, not only at start, once an offence no longer weighs', () => {
    const db = openStore(tempDir());
    const store = new SqliteFilterStore(db);
    // Through an index on the age: the table holds every source banned in the last 20 half-lives (not capped).
    const plan = (db.prepare('EXPLAIN QUERY PLAN DELETE FROM filter_offenders WHERE last_ban < ?').all() as { detail: string }[]).map((r) => r.detail).join(' | ');
    expect(plan).not.toMatch(/\bSCAN\b/);
    const POLICY = { repeatGrowth: 2, repeatHalfLifeHours: 1, timeScale: 1, maxSources: 10_000 };
    const T = 1_800_000_000_000, H = 3600_000;
    const d = new Decisions(POLICY, [], { store, log: pino({ level: 'silent' }) }, T);
    d.ban('192.0.2.7', 'flood', 'x', 300, T);
    store.flush();
    d.ban('192.0.2.8', 'flood', 'x', 300, T + 10 * H);
    store.flush();
    expect([...store.loadOffenders().keys()].sort()).toEqual(['192.0.2.7', '192.0.2.8']);
    // 20 half-lives after the first offence (and an hour since the last pruning): it goes, the later one stays.
    d.expire(T + 20 * H + 1);
    expect([...store.loadOffenders().keys()]).toEqual(['192.0.2.8']);
  });
});

describe('blacklist addresses as written', () => {
  // README "Lists: IPv4 and IPv6 apart": an IPv4 client on a dual-stack listener, ::ffff:a.b.c.d, is the IPv4 address
  // it is. With "/64", only the lower-case dotted spelling was read so; "::FFFF:1.2.3.4/64" banned ::/64 (the source of
  // ::1) and left the client unbanned (failed on the code before 2026-11-29).
  it('every spelling of an IPv4-mapped address (with /64 or not) bans the same source (generated)', () => {
    const hex = (n: number) => n.toString(16);
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), fc.constantFrom('', '/64'), fc.integer({ min: 0, max: 3 }), ([a, b, c, d], tail, form) => {
      const v4 = `${a}.${b}.${c}.${d}`;
      const spellings = [
        `::ffff:${v4}`,
        `::FFFF:${v4}`,
        `0:0:0:0:0:ffff:${v4}`,
        `::ffff:${hex(a * 256 + b)}:${hex(c * 256 + d)}`,
      ];
      expect(parseBlacklistAddress(spellings[0] + tail)).toEqual({ ok: true, value: v4 });
      expect(parseBlacklistAddress(spellings[form] + tail), spellings[form] + tail).toEqual(parseBlacklistAddress(spellings[0] + tail));
    }), { numRuns: 500 });
  });
});
