// The pure parts of "a NAT is many people": how far a trust token may spread
// before it counts as copied, how the people behind one address are counted,
// and how the rules' events are shared among them. Fake clock throughout.
import { describe, expect, it } from 'vitest';
import { networkOf, TokenSpread } from '../src/challenge/cookie.ts';
import { SharedAddresses } from '../src/detect/shared-address.ts';
import { compileRules, DEFAULT_RULES, EVENT_INDEX } from '../src/detect/rules.ts';
import { applyEvents, fills, newPending, newVerdict } from '../src/detect/engine.ts';

describe('networkOf', () => {
  it('is the /24 of an IPv4 source and the /48 of an IPv6 one', () => {
    expect(networkOf('192.0.2.77')).toBe('192.0.2');
    expect(networkOf('2001:db8:1:2::/64')).toBe('2001:db8:1::/48');
    expect(networkOf('2001:db8::/64')).toBe('2001:db8:0::/48');
  });
});

describe('TokenSpread', () => {
  it('honours a token from a few networks (NAT pool, IPv4 and IPv6) and refuses it everywhere once it spread further', () => {
    const t = new TokenSpread({ maxNetworks: 3, maxTokens: 10 });
    expect(t.use('id1', '127.0.0.5')).toBe(true);
    expect(t.use('id1', '127.0.0.6')).toBe(true); // same /24: a NAT pool
    expect(t.use('id1', '2001:db8:1:2::/64')).toBe(true);
    expect(t.use('id1', '198.51.100.1')).toBe(true);
    expect(t.use('id1', '203.0.113.9')).toBe(false); // a fourth network: copied
    expect(t.use('id1', '127.0.0.5')).toBe(false); // and from then on refused where it was fine
    expect(t.revoked).toBe(1);
    expect(t.use('id2', '203.0.113.9')).toBe(true); // other tokens are not affected
  });

  it('with workers: each tells the node the networks it first sees a token from; the node counts them all, and a token it revokes is refused in every worker', () => {
    const node = new TokenSpread({ maxNetworks: 3, maxTokens: 10 });
    const workers = [new TokenSpread({ maxNetworks: 3, maxTokens: 10 }), new TokenSpread({ maxNetworks: 3, maxTokens: 10 })];
    const told: string[] = [];
    for (const w of workers) w.onNetwork = (id, net) => { told.push(net); if (!node.useNetwork(id, net)) for (const x of workers) x.revoke(id); };
    // A copied token, two networks in each worker: under the line in each, over it for the node.
    expect(workers[0].use('id', '198.51.100.1')).toBe(true);
    expect(workers[0].use('id', '198.51.100.2')).toBe(true); // same /24: not told again
    expect(workers[1].use('id', '203.0.113.9')).toBe(true);
    expect(workers[0].use('id', '192.0.2.1')).toBe(true);
    workers[1].use('id', '100.64.0.1'); // the fourth network of the node
    expect(told).toEqual(['198.51.100', '203.0.113', '192.0.2', '100.64.0']);
    expect([workers[0].use('id', '198.51.100.1'), workers[1].use('id', '203.0.113.9')]).toEqual([false, false]);
    expect(node.revoked).toBe(1);
    // The same network told twice (a worker that forgot the token and saw it again) counts once.
    const again = new TokenSpread({ maxNetworks: 1, maxTokens: 10 });
    expect([again.useNetwork('t', '10.0.0'), again.useNetwork('t', '10.0.0')]).toEqual([true, true]);
  });

  it('forgets the least recently used token first, to the second (a token in use every request is not moved every time)', () => {
    const t = new TokenSpread({ maxNetworks: 4, maxTokens: 2 });
    t.use('a', '10.0.0.1', 0);
    t.use('b', '10.0.1.1', 0);
    t.use('a', '10.0.0.1', 500); // within the second: its place is unchanged, so a is still the oldest
    t.use('c', '10.0.2.1', 600);
    expect(t.use('a', '10.9.9.1', 700) && t.use('a', '10.9.8.1', 700) && t.use('a', '10.9.7.1', 700) && t.use('a', '10.9.6.1', 700)).toBe(true); // a was forgotten: four fresh networks pass
    const u = new TokenSpread({ maxNetworks: 1, maxTokens: 2 });
    u.use('a', '10.0.0.1', 0);
    u.use('b', '10.0.1.1', 0);
    u.use('a', '10.0.0.1', 1000); // a second later: a becomes the most recent
    u.use('c', '10.0.2.1', 1000); // b goes
    expect(u.use('a', '10.0.5.1', 1000)).toBe(false); // a remembered: a second network is one too many
  });

  it('remembers at most maxTokens tokens', () => {
    const t = new TokenSpread({ maxNetworks: 1, maxTokens: 100 });
    for (let i = 0; i < 1000; i++) t.use(`id${i}`, `10.0.${i % 250}.1`);
    expect(t.size).toBe(100);
  });
});

describe('SharedAddresses', () => {
  const opts = { sessionCookies: ['sid'], maxFactor: 32, cookieMaxFactor: 4 };
  it('one client opening many connections at once is one person: a token replaced on its connection by a newer one stops counting', () => {
    let now = 0;
    const s = new SharedAddresses(opts, () => now);
    // 8 connections, each first request challenged with its own token; the requests already in flight bring each
    // token back twice on its connection (enough to count), then the client sends its newest token everywhere.
    const last: (string | null)[] = Array(8).fill(null);
    const send = (conn: number, id: string) => { s.note(now, '127.0.0.9', id, undefined, last[conn]); last[conn] = id; };
    for (let k = 0; k < 2; k++) for (let c = 0; c < 8; c++) { send(c, `t${c}`); now += 1; } // interleaved, as they arrive
    for (let r = 0; r < 5; r++) for (let c = 0; c < 8; c++) { send(c, 't7'); now += 1; }
    now += 1500; // past the cache
    expect(s.factor(now, '127.0.0.9')).toBe(1);
    // People behind a NAT: one token per browser and connection, never replaced: each counts.
    const people = Array(8).fill(null);
    for (let r = 0; r < 3; r++) for (let c = 0; c < 8; c++) { s.note(now, '127.0.0.10', `p${c}`, undefined, people[c]); people[c] = `p${c}`; now += 1; }
    now += 1500;
    expect(s.factor(now, '127.0.0.10')).toBe(8);
    // A token that is not new (first seen long ago) taking over a connection (a forward proxy sharing its
    // connections between users) replaces nothing.
    now += 5000;
    s.note(now, '127.0.0.10', 'p1', undefined, 'p0');
    now += 1500;
    expect(s.factor(now, '127.0.0.10')).toBe(8);
  });

  it('counts distinct challenge clients that came back, up to maxFactor; one client is 1 however often it comes', () => {
    let now = 0;
    const s = new SharedAddresses(opts, () => now);
    for (let r = 0; r < 50; r++) s.note(now, '127.0.0.1', 'same-client', undefined);
    expect(s.factor(now, '127.0.0.1')).toBe(1);
    // People's requests interleave: each person's second request comes after others'.
    for (let k = 0; k < 2; k++) for (let i = 0; i < 40; i++) s.note(now, '127.0.0.2', `c${i}`, undefined);
    now += 1500; // past the cache
    expect(s.factor(now, '127.0.0.2')).toBe(32);
    expect(s.behind('127.0.0.2')).toBe(32);
    expect(s.factor(now, '127.0.0.3')).toBe(1);
  });

  it('counts more people than it has slots for without collapsing (those that came back are kept)', () => {
    const s = new SharedAddresses({ sessionCookies: [], maxFactor: 64, cookieMaxFactor: 8 }, () => 0);
    for (let k = 0; k < 4; k++) for (let i = 0; i < 300; i++) s.note(k * 1000, '127.0.0.9', `p${i}`, undefined);
    expect(s.factor(4000, '127.0.0.9')).toBe(64);
  });

  it('counts the site session cookie too, but only up to cookieMaxFactor (it cannot be verified); the larger count wins', () => {
    const s = new SharedAddresses(opts, () => 0);
    for (let k = 0; k < 2; k++) for (let i = 0; i < 10; i++) s.note(0, '127.0.0.4', null, `theme=dark; sid=session-value-${i}; x=1`);
    expect(s.factor(0, '127.0.0.4')).toBe(4);
    // Short values are no session ids; unknown names are ignored.
    for (let k = 0; k < 2; k++) for (let i = 0; i < 10; i++) s.note(0, '127.0.0.5', null, `sid=${i}; other=abcdefghijkl${i}; xsid=abcdefghijkl${i}`);
    expect(s.factor(0, '127.0.0.5')).toBe(1);
  });

  it('records the same sessions of a source again only after half a second (a page\'s assets carry the same cookies)', () => {
    const s = new SharedAddresses(opts, () => 0);
    s.note(0, '127.0.0.7', 'only', undefined);
    s.note(100, '127.0.0.7', 'only', undefined);
    s.note(100, '127.0.0.7', 'other', undefined);
    s.note(100, '127.0.0.7', 'other', undefined);
    expect(s.factor(100, '127.0.0.7')).toBe(1); // neither came back as far as counting goes
    s.note(700, '127.0.0.7', 'other', undefined);
    s.note(800, '127.0.0.7', 'only', undefined);
    expect(s.factor(800, '127.0.0.7')).toBe(2);
  });

  it('forgets sessions not seen within the window', () => {
    const s = new SharedAddresses(opts, () => 0);
    for (let k = 0; k < 2; k++) for (let i = 0; i < 5; i++) s.note(0, '127.0.0.6', `c${i}`, undefined);
    expect(s.factor(0, '127.0.0.6')).toBe(5);
    expect(s.factor(11 * 60_000, '127.0.0.6')).toBe(1);
  });
});

describe('applyEvents for an address of several people', () => {
  const rules = compileRules(DEFAULT_RULES);
  const flood = DEFAULT_RULES.findIndex((r) => r.name === 'flood');
  const slow = DEFAULT_RULES.findIndex((r) => r.name === 'slow');
  it('judges the same levels against buckets that many times larger, leaking that many times faster: recognised late, a NAT is not judged by what it looked like before', () => {
    const levels = new Array(rules.count).fill(0);
    const p = newPending(), v = newVerdict();
    p[EVENT_INDEX.request] = 300;
    applyEvents(levels, 0, 0, p, rules, v, 1);
    expect(v.overflow).toBeGreaterThanOrEqual(0); // one client: 300 requests at once overflow 'flood' (200)
    applyEvents(levels, 0, 0, p, rules, v, 4);
    expect(v.overflow).toBe(-1); // the same, for four people: 300 / 800
    expect(fills(levels, 0, 0, rules, 4)[flood]).toBeCloseTo(300 / 800);
    // Leak: 1 s at 4 people forgives 4 × 20 requests.
    applyEvents(levels, 0, 1000, p, rules, v, 4);
    expect(levels[flood]).toBeCloseTo(220);
  });

  it('never shares what no person does (slow requests)', () => {
    const levels = new Array(rules.count).fill(0);
    const p = newPending(), v = newVerdict();
    p[EVENT_INDEX.slow] = 4;
    applyEvents(levels, 0, 0, p, rules, v, 32);
    expect(v.overflow).toBe(slow);
  });
});

describe('CookieChallenge.client', () => {
  it('honours a token for its domain only, until it expires, also once it was verified before (cache)', async () => {
    const { createSecretKey } = await import('node:crypto');
    const { CookieChallenge, signToken } = await import('../src/challenge/cookie.ts');
    const secret = createSecretKey(Buffer.alloc(32, 3));
    const c = new CookieChallenge(secret, 't', { maxNetworks: 4, maxTokens: 100 });
    const token = signToken(secret, 'AAAAAAAAAAA', 'a.test', 10_000);
    const head = (source: string) => ({ source, headers: { cookie: `x=1; t=${token}` } }) as unknown as Parameters<typeof c.client>[0];
    expect(c.client(head('192.0.2.1'), 'a.test', 1000)).toBe('AAAAAAAAAAA');
    expect(c.client(head('192.0.2.1'), 'a.test', 2000)).toBe('AAAAAAAAAAA');
    expect(c.client(head('192.0.2.1'), 'b.test', 2000)).toBeNull();
    expect(c.client(head('192.0.2.1'), 'a.test', 10_001)).toBeNull();
  });
});

describe('config: filter.nat and filter.challenge.maxNetworksPerToken', () => {
  const base = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:9'] }] };
  it('has defaults, and refuses bad values with a problem naming the key', async () => {
    const { loadConfigObject } = await import('../src/config/load.ts');
    const ok = loadConfigObject(base, {});
    expect(ok.ok && ok.config.filter.nat.maxFactor).toBe(32);
    expect(ok.ok && ok.config.filter.nat.sessionCookies).toContain('PHPSESSID');
    expect(ok.ok && ok.config.filter.challenge.maxNetworksPerToken).toBe(4);
    const bad = loadConfigObject({ ...base, filter: { nat: { sessionCookies: ['ok', 'bad name'], maxFactor: 4, cookieMaxFactor: 8 }, challenge: { maxNetworksPerToken: 0 } } }, {});
    expect(bad.ok).toBe(false);
    const problems = bad.ok ? [] : bad.problems.join('\n');
    expect(problems).toContain('filter.nat.sessionCookies[1]');
    expect(problems).toContain('filter.nat.cookieMaxFactor: must not exceed filter.nat.maxFactor (4)');
    expect(problems).toContain('filter.challenge.maxNetworksPerToken: must be at least 1');
  });
});

describe('SharedAddresses memory', () => {
  it('stays bounded when every request of many sources makes up a new session value', () => {
    const s = new SharedAddresses({ sessionCookies: ['sid'], maxFactor: 32, cookieMaxFactor: 8 }, () => 0);
    for (let src = 0; src < 8000; src++) for (let k = 0; k < 40; k++) s.note(k * 600, `10.${src >> 8}.${src & 255}.1`, `id${src}-${k}-xxxxxxx`, `sid=made-up-${src}-${k}-xxxxxxxx`);
    // At most 2000 sources, each with at most 128 (64) sessions (by construction): some 35 MB at worst
    // (measured with --expose-gc for 8000 sources × 200 made-up sessions of each kind).
    expect(s.sources).toBe(2000);
    expect(s.factor(0, '10.31.63.1')).toBe(1); // seen once each: no person
  });
});
