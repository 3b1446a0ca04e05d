// IPv4 and IPv6 kept apart in the lists (issue 12, item 4). net.BlockList matches an IPv4 address against IPv6
// ranges that cover the IPv4-mapped space (::/64, ::/80, ::ffff:0:0/96): banning ::1 (stored as ::/64) dropped
// every IPv4 client at accept, and whitelisting ::/80 whitelisted every IPv4 address. Real sockets, admin API.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, request, rawExchange, domain, statusOf, type Origin, type Proxy } from './helpers/servers.ts';
import { Blacklist } from '../src/decisions/blacklist.ts';
import { parseWhitelistEntry, Whitelist } from '../src/decisions/lists.ts';

let origin: Origin;
let proxy: Proxy;

beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startProxy({ domains: [domain('site.test', [origin.address])] });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

const admin = (method: string, path: string, body?: unknown) =>
  request(`${proxy.adminUrl}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
const get = (localAddress: string) =>
  rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n', { localAddress, timeoutMs: 1500 });

describe('a ban of an IPv6 source never drops IPv4 clients', () => {
  it('ban ::1 (its /64 is ::/64) through the API: IPv4 clients are still served, and not listed', async () => {
    const put = await admin('PUT', `/api/blacklist/${encodeURIComponent('::1')}`, { ttlSeconds: 600, reason: 'test' });
    expect(put.status).toBe(200);
    expect(JSON.parse(put.body).ip).toBe('::/64');
    for (const a of ['127.0.0.1', '127.0.3.4']) {
      const r = await get(a);
      expect(statusOf(r.text)).toBe(200);
      expect(JSON.parse((await admin('GET', `/api/blacklist/${a}`)).body).listed).toBe(false);
    }
    // An IPv4 ban still drops its own client at accept.
    expect((await admin('PUT', '/api/blacklist/127.0.3.5', { ttlSeconds: 600 })).status).toBe(200);
    expect((await get('127.0.3.5')).text).toBe('');
    expect(statusOf((await get('127.0.3.6')).text)).toBe(200);
  });
});

describe('the whitelist cannot cover IPv4 through an IPv6 range', () => {
  for (const range of ['::/80', '::/64', '::ffff:0:0/96', '::/96']) {
    it(`${range} is refused`, async () => {
      const r = await admin('PUT', `/api/whitelist/${encodeURIComponent(range)}`, {});
      expect(r.status).toBe(400);
      expect(r.body).toMatch(/IPv4/);
    });
  }

  it('after those attempts, an IPv4 source can still be banned and is dropped at accept', async () => {
    const put = await admin('PUT', '/api/blacklist/127.0.4.9', { ttlSeconds: 600 });
    expect(put.status).toBe(200);
    expect((await get('127.0.4.9')).text).toBe('');
  });

  it('ordinary IPv6 ranges and ::1 are still accepted', () => {
    expect(parseWhitelistEntry('2001:db8::/48').ok).toBe(true);
    expect(parseWhitelistEntry('::1').ok).toBe(true);
    expect(parseWhitelistEntry('::ffff:10.1.0.0/112')).toMatchObject({ ok: true, value: { kind: 'ipv4', text: '10.1.0.0/16' } });
  });
});

const range = (text: string) => {
  const p = parseWhitelistEntry(text);
  if (!p.ok) throw new Error(p.error);
  return p.value;
};

describe('matching by family (the lists themselves)', () => {
  it('Whitelist: an IPv6 entry never covers an IPv4 source (even a range parse would now refuse)', () => {
    const w = new Whitelist();
    w.add(range('::/112'), 'api', '', 0);
    expect(w.covers('0.0.0.1')).toBe(false);
    // Belt and braces: a range that reached the list some other way still matches IPv6 only.
    w.add({ kind: 'ipv6', network: '::', prefix: 80, text: '::/80' }, 'api', '', 0);
    expect(w.covers('127.0.0.1')).toBe(false);
    expect(w.covers('::/64')).toBe(true);
    w.add(range('10.0.0.0/16'), 'api', '', 0);
    expect(w.covers('10.0.3.4')).toBe(true);
  });

  it('the blacklist\'s BlockList: an IPv6 /64 ban refuses no IPv4 peer; an IPv4 ban refuses its IPv4-mapped form', () => {
    const b = new Blacklist();
    const ban = (ip: string) => b.add({ ip, reason: '', rule: 'manual', since: 0, expiresAt: 1e15 });
    ban('::/64');
    const l = b.blockList;
    expect(l.check('127.0.0.1', 'ipv4')).toBe(false);
    expect(l.check('0.0.0.1', 'ipv4')).toBe(false);
    expect(l.check('::1', 'ipv6')).toBe(true);
    ban('10.0.0.1');
    expect(l.check('10.0.0.1', 'ipv4')).toBe(true);
    expect(l.check('::ffff:10.0.0.1', 'ipv6')).toBe(true);
    expect(l.check(new net.SocketAddress({ address: '127.0.0.2', family: 'ipv4' }))).toBe(false);
    expect(l.check(new net.SocketAddress({ address: '::2', family: 'ipv6' }))).toBe(true);
    expect(b.tally.refused).toBe(4);
    // Entries are the blacklist's: one added to the list itself would never be consulted.
    expect(() => l.addAddress('10.0.0.2')).toThrow(/Blacklist/);
  });
});
