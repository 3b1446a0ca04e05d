// Bucketing, counting and storing statistics: pure functions, the in-memory
// recorder on a fake clock, and the sqlite store on a real (in-memory) database.
import { describe, it, expect } from 'vitest';
import { DatabaseSync } from 'node:sqlite';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore } from '../src/store/db.ts';
import { bucketOf, countInto, newCounters, F, FIELDS, attackPeriods, toBucketJson, BUCKET_SECONDS } from '../src/stats/buckets.ts';
import { Recorder } from '../src/stats/recorder.ts';
import { StatsStore, DEFAULT_RETENTION_DAYS } from '../src/stats/store.ts';
import { parseTime } from '../src/admin/query.ts';

const RETENTION_SECONDS = DEFAULT_RETENTION_DAYS * 86400;
import type { Observation } from '../src/observe/observation.ts';

const obs = (o: Partial<Observation>): Observation => ({
  domain: 'a.test', source: '127.0.0.1', client: '127.0.0.1', method: 'GET', path: '/', status: 200, bytesIn: 100, bytesOut: 1000,
  durationMs: 1, contentType: null, outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: true, queuedMs: 0, upstreamMs: 1, ...o,
});

describe('buckets', () => {
  it('aligns moments to 3-minute bucket starts in Unix seconds', () => {
    expect(BUCKET_SECONDS).toBe(180);
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(179_999)).toBe(0);
    expect(bucketOf(180_000)).toBe(180);
    expect(bucketOf(Date.UTC(2025, 0, 1, 10, 4, 59))).toBe(Date.UTC(2025, 0, 1, 10, 3, 0) / 1000);
  });

  it('counts passed, dropped, challenged and proxy-answered requests apart; only passed bytes are passed traffic', () => {
    const c = newCounters();
    countInto(c, obs({}));
    countInto(c, obs({ outcome: 'blocked', status: 0, bytesIn: 50, bytesOut: 0 }));
    countInto(c, obs({ outcome: 'challenged', status: 302, bytesIn: 70, bytesOut: 20 }));
    countInto(c, obs({ outcome: 'proxy', status: 502, bytesIn: 30, bytesOut: 0, upstreamError: 'connect' }));
    countInto(c, obs({ outcome: 'passed', status: 503, bytesIn: 10, bytesOut: 5, upstreamError: '5xx' }));
    countInto(c, obs({ outcome: 'proxy', status: 504, bytesIn: 10, bytesOut: 0, upstreamError: 'timeout' }));
    const j = toBucketJson(60, Object.fromEntries(FIELDS.map((f, i) => [f, c[i]])), { blacklist_size: 7, accept_dropped: 3 });
    expect(j.incoming).toEqual({ requests: 6, bytesIn: 270, bytesOut: 1025 });
    expect(j.passed).toEqual({ requests: 2, bytesIn: 110, bytesOut: 1005 });
    expect(j.dropped).toEqual({ requests: 1, bytesIn: 50, bytesOut: 0 });
    expect(j.challenged.requests).toBe(1);
    expect(j.proxyAnswered.requests).toBe(2);
    expect(j.upstreamErrors).toEqual({ connect: 1, timeout: 1, reset: 0, '5xx': 1 });
    expect(j.status).toEqual({ '1xx': 0, '2xx': 1, '3xx': 1, '4xx': 0, '5xx': 3 });
    expect(j.blacklistSize).toBe(7);
    expect(j.acceptDropped).toBe(3);
    expect(j.attack).toBe(false);
  });

  it('merges contiguous attack buckets into periods', () => {
    const b = (t: number, attack: boolean) => ({ t, attack });
    expect(attackPeriods([b(0, true), b(180, true), b(360, false), b(540, true), b(1080, true)])).toEqual([
      { from: 0, to: 360 }, { from: 540, to: 720 }, { from: 1080, to: 1260 },
    ]);
    expect(attackPeriods([b(0, false)])).toEqual([]);
  });
});

describe('recorder', () => {
  it('keeps each bucket apart across a rollover and hands out deltas until committed', () => {
    let now = 1_000 * 180_000; // a bucket start
    const r = new Recorder(() => now);
    r.record(obs({}));
    r.record(obs({}));
    now += 180_000; // next bucket
    r.record(obs({ outcome: 'blocked' }));
    r.record(obs({ domain: null, bytesIn: 40, bytesOut: 0, outcome: 'proxy', status: 421 }));
    r.droppedAtAccept(5);
    const p = r.pending();
    expect(p.domains.map((d) => [d.domain, d.t, d.c[F.reqIn], d.c[F.reqPassed], d.c[F.reqDropped]])).toEqual([
      ['a.test', 180_000, 2, 2, 0], ['a.test', 180_180, 1, 0, 1],
    ]);
    expect(p.globals).toHaveLength(1);
    expect(p.globals[0].t).toBe(180_180);
    expect([...p.globals[0].g]).toEqual([0, 5, 1, 40, 0]);
    // Not committed: handed out again, with what came since.
    r.record(obs({}));
    expect(r.pending().domains.map((d) => d.c[F.reqIn])).toEqual([2, 2]);
    r.commit();
    expect(r.pending()).toEqual({ domains: [], globals: [] });
    // Totals since start stay for Prometheus.
    const totals = Object.fromEntries([...r.totals()].map(([d, a]) => [d, a.total[F.reqIn]]));
    expect(totals).toEqual({ 'a.test': 4 });
    expect(r.globalTotal[1]).toBe(5);
  });

  it('samples the blacklist as a maximum and attack mode as seconds per bucket', () => {
    let now = 2_000 * 180_000;
    const r = new Recorder(() => now);
    r.sample({ blacklistSize: 3, underAttack: ['a.test'], droppedConnections: 0, counters: {} }, 5);
    now += 5_000;
    r.sample({ blacklistSize: 9, underAttack: ['a.test'], droppedConnections: 0, counters: {} }, 5);
    now += 5_000;
    r.sample({ blacklistSize: 4, underAttack: [], droppedConnections: 0, counters: {} }, 5);
    r.sample({ blacklistSize: 4, underAttack: [], droppedConnections: 7, counters: {} }, 5);
    r.sample({ blacklistSize: 4, underAttack: [], droppedConnections: 10, counters: {} }, 5);
    const p = r.pending();
    expect(p.globals[0].g[0]).toBe(9);
    expect(p.globals[0].g[1]).toBe(10); // connections refused at accept, from the filter's counter
    expect(p.domains[0].c[F.attackSeconds]).toBe(10);
  });
});

describe('attack seconds', () => {
  it('a bucket never holds more than its 180 s, however often it is sampled and written (each admin call samples)', () => {
    let now = 3_000 * 180_000;
    const r = new Recorder(() => now);
    const db = new DatabaseSync(':memory:');
    const s = new StatsStore(db);
    const under = { blacklistSize: 0, underAttack: ['a.test'], droppedConnections: 0, counters: {} };
    // A whole bucket under attack: the 5 s timer, and three admin calls a few ms after each, each sampling and writing.
    for (let i = 0; i < 36; i++) {
      for (const secs of [5, 0.004, 0.003, 0.005]) {
        now += secs * 1000;
        r.sample(under, secs);
        const p = r.pending();
        s.write(p.domains, p.globals);
        r.commit();
      }
    }
    const row = s.domainRows('a.test', 3_000 * 180, 3_001 * 180)[0];
    // Sampled time inside the bucket: 35 rounds of 5.012 s (the 36th crosses into the next bucket).
    expect(row.attack_seconds).toBeGreaterThanOrEqual(174);
    expect(row.attack_seconds).toBeLessThanOrEqual(180);
    db.close();
  });

  it('a short attack still shades its bucket (one second at least), once', () => {
    const now = 3_100 * 180_000;
    const r = new Recorder(() => now);
    r.sample({ blacklistSize: 0, underAttack: ['a.test'], droppedConnections: 0, counters: {} }, 0.2);
    r.sample({ blacklistSize: 0, underAttack: ['a.test'], droppedConnections: 0, counters: {} }, 0.2);
    expect(r.pending().domains[0].c[F.attackSeconds]).toBe(1);
  });

  it('read back, a bucket says at most 180 s (nodes of a cluster add theirs up)', () => {
    expect(toBucketJson(180, { attack_seconds: 420 }, undefined).attackSeconds).toBe(BUCKET_SECONDS);
  });
});

describe('store', () => {
  it('adds deltas to stored rows, keeps the largest blacklist sample, and prunes past retention only', () => {
    const db = new DatabaseSync(':memory:');
    const s = new StatsStore(db);
    const c = newCounters();
    c[F.reqIn] = 3; c[F.passedBytesOut] = 1000;
    const g = new Float64Array([10, 1, 0, 0, 0]);
    s.write([{ domain: 'a.test', t: 180, c }], [{ t: 180, g }]);
    s.write([{ domain: 'a.test', t: 180, c }], [{ t: 180, g: new Float64Array([4, 2, 0, 0, 0]) }]);
    const row = s.domainRows('a.test', 0, 360)[0];
    expect(row.req_in).toBe(6);
    expect(row.passed_bytes_out).toBe(2000);
    expect(s.globalRows(0, 360)[0]).toMatchObject({ blacklist_size: 10, accept_dropped: 3 });
    expect(s.billingSamples('a.test', 0, 360)).toEqual([{ t: 180, bytesIn: 0, bytesOut: 2000 }]);
    expect(RETENTION_SECONDS).toBeGreaterThanOrEqual(397 * 86400); // 13 months at their longest
    s.prune(180 + RETENTION_SECONDS);
    expect(s.domainRows('a.test', 0, 360)).toHaveLength(1);
    s.prune(181 + RETENTION_SECONDS);
    expect(s.domainRows('a.test', 0, 360)).toHaveLength(0);
    // A shorter configured retention prunes earlier.
    s.write([{ domain: 'a.test', t: 180, c }], [{ t: 180, g }]);
    s.prune(181 + 86400, 1);
    expect(s.domainRows('a.test', 0, 360)).toHaveLength(0);
    db.close();
  });

  // After a long downtime or a lowered retention the backlog is millions of buckets: one transaction held the proxy
  // for as long as it took. It goes in steps of a bounded number of rows, the event loop running in between.
  it('prunes a backlog in steps of at most rowsPerStep rows, each leaving the rest for the next', () => {
    const db = openStore(fs.mkdtempSync(path.join(os.tmpdir(), 'scrubber-prune-')));
    const s = new StatsStore(db);
    const c = newCounters();
    c[F.reqIn] = 1;
    const g = new Float64Array([1, 0, 0, 0, 0]);
    const N = 1200, keep = 5;
    const ts = Array.from({ length: N + keep }, (_, i) => 180 * (i + 1));
    s.write(ts.map((t) => ({ domain: 'a.test', t, c })), ts.map((t) => ({ t, g })));
    const now = 180 * (N + 1) + 86400; // retention 1 day: the first N buckets go
    const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    const left: number[] = [];
    for (const _ of s.pruneSteps(now, 1, 500)) left.push(count('stats_domain_bucket') + count('stats_global_bucket'));
    // 1,200 rows in steps of 500 (500, 500, 200) for the domain, then for the global table.
    expect(left).toEqual([2 * (N + keep) - 500, 2 * (N + keep) - 1000, N + 2 * keep, N + 2 * keep - 500, N + 2 * keep - 1000, 2 * keep]);
    expect(s.domainRows('a.test', 0, now).map((r) => r.t)).toEqual(ts.slice(N));
    db.close();
  });

  // The hourly prune runs on the event loop: with 430 days of buckets for many domains, a statement that reads
  // the whole table (SCAN) blocks the proxy for as long as that takes. Every statement it runs must go through a key.
  it('prunes through the keys (SEARCH, never a SCAN), deleting exactly the rows past retention, on a real store file', () => {
    const db = openStore(fs.mkdtempSync(path.join(os.tmpdir(), 'scrubber-prune-')));
    const prepared: string[] = [];
    const prepare = db.prepare.bind(db);
    db.prepare = ((sql: string) => { prepared.push(sql); return prepare(sql); }) as typeof db.prepare;
    const s = new StatsStore(db);
    const now = 100 * 86400;
    const cut = now - 86400; // retention 1 day: a bucket starting before this goes
    const ts = [cut - 360, cut - 180, cut, cut + 180];
    const c = newCounters();
    c[F.reqIn] = 1;
    const g = new Float64Array([1, 0, 0, 0, 0]);
    s.write(['a.test', 'b.test'].flatMap((domain) => ts.map((t) => ({ domain, t, c }))), ts.map((t) => ({ t, g })));
    s.write([{ domain: 'old.test', t: cut - 180, c }], []);
    const fromPrune = prepared.length;
    s.prune(now, 1);
    db.prepare = prepare;
    const checked = prepared.filter((q, i) => i >= fromPrune || /^\s*DELETE/i.test(q));
    expect(checked.some((q) => /DELETE FROM stats_domain_bucket/i.test(q))).toBe(true);
    for (const q of checked) {
      const plan = (db.prepare(`EXPLAIN QUERY PLAN ${q}`).all() as { detail: string }[]).map((r) => r.detail).join(' | ');
      expect(plan, q).not.toMatch(/\bSCAN\b/);
    }
    const left = (db.prepare('SELECT domain, t FROM stats_domain_bucket ORDER BY domain, t').all() as { domain: string; t: number }[]).map((r) => `${r.domain}@${r.t}`);
    expect(left).toEqual(['a.test', 'b.test'].flatMap((d) => [`${d}@${cut}`, `${d}@${cut + 180}`]));
    expect(s.globalRows(0, now).map((r) => r.t)).toEqual([cut, cut + 180]);
    db.close();
  });
});

describe('from/to of the stats API (parseTime)', () => {
  it('a year before 100 is that year (Date.UTC read 0099 as 1999)', () => {
    const d = new Date(parseTime('0099-01-01T00:00:00Z')! * 1000);
    expect([d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()]).toEqual([99, 0, 1]);
  });

  it('a date and time without an offset is UTC, as the buckets are, whatever the server\'s time zone', () => {
    const tz = process.env.TZ;
    process.env.TZ = 'America/New_York';
    try {
      expect(parseTime('2025-03-10T12:00:00')).toBe(1741608000);
      expect(parseTime('2025-03-10T12:00')).toBe(1741608000);
      expect(parseTime('2025-03-10 12:00:00')).toBe(1741608000);
      expect(parseTime('2025-03-10')).toBe(1741564800);
      expect(parseTime('2025-03-10T12:00:00Z')).toBe(1741608000);
      expect(parseTime('2025-03-10T08:00:00-04:00')).toBe(1741608000);
      expect(parseTime('2025-03-10T14:00:00+0200')).toBe(1741608000);
    } finally {
      if (tz === undefined) delete process.env.TZ; else process.env.TZ = tz;
    }
  });
});
