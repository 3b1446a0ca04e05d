// The lists through the admin API (SPEC.md §10) with bearer-token auth and
// 400s for bad input; whitelisted sources are never blocked; bans, lists and
// repeat-offender history survive a restart; mode off only observes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { startOrigin, startProxy, sleep, domain, tempDir, type Origin, type Proxy } from './helpers/servers.ts';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';
import { loadConfigObject } from '../src/config/load.ts';

const HOST = 'api.test';
const TOKEN = 'filter-test-token';
const UA = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0', accept: '*/*', 'accept-language': 'en' };

function get(port: number, path: string, local: string, agent?: http.Agent): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, localAddress: agent ? undefined : local, agent: agent ?? false, headers: { host: HOST, ...UA } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(3000, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Whether a connection from `local` is closed at accept without a byte of HTTP. */
function refusedAtAccept(port: number, local: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: local });
    let got = '';
    s.on('data', (d) => { got += d; });
    s.on('connect', () => s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`));
    s.on('error', () => {});
    s.on('close', () => resolve(got === ''));
    setTimeout(() => { s.destroy(); }, 2000);
  });
}

async function flood(port: number, local: string, f: ScrubberFilter, max = 1500): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: local });
  let n = 0;
  const worker = async () => { while (n < max && !f.banOf(local)) { n++; await get(port, '/api/items', local, agent); } };
  await Promise.all([worker(), worker(), worker(), worker()]);
  agent.destroy();
  return n;
}

function admin(p: Proxy, method: string, path: string, body?: string, token: string | null = TOKEN) {
  return fetch(p.adminUrl + path, { method, body, headers: token === null ? {} : { authorization: `Bearer ${token}` } })
    .then(async (r) => ({ status: r.status, json: await r.json() as Record<string, unknown> }));
}

let origin: Origin;
beforeAll(async () => { origin = await startOrigin((req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}'); }); });
afterAll(async () => { await origin?.close(); });

describe('admin API for the lists', () => {
  let proxy: Proxy;
  let f: ScrubberFilter;
  beforeAll(async () => {
    proxy = await startProxy({
      admin: { host: '127.0.0.1', port: 0, token: TOKEN },
      domains: [domain(HOST, [origin.address])],
      filter: { mode: 'always', challenge: { enabled: false }, whitelist: ['127.0.9.0/24'] },
    });
    f = proxy.app.filter as ScrubberFilter;
  });
  afterAll(async () => { await proxy?.close(); });

  it('needs the bearer token', async () => {
    expect((await admin(proxy, 'GET', '/api/blacklist', undefined, null)).status).toBe(401);
    expect((await admin(proxy, 'GET', '/api/blacklist', undefined, 'wrong')).status).toBe(401);
    expect((await admin(proxy, 'PUT', '/api/blacklist/203.0.113.9', '{"ttlSeconds":60}', null)).status).toBe(401);
    expect(f.banOf('203.0.113.9')).toBeUndefined();
    expect((await admin(proxy, 'PUT', '/api/whitelist/203.0.113.9', undefined, 'wrong')).status).toBe(401);
    const ok = await admin(proxy, 'GET', '/api/blacklist');
    expect(ok).toEqual({ status: 200, json: { total: 0, entries: [] } });
  });

  it('a manual ban: listed with its reason and expiry, refused at accept, lifted by DELETE', async () => {
    const ip = '127.0.10.1';
    expect(await get(proxy.port, '/', ip)).toBe(200);
    const put = await admin(proxy, 'PUT', `/api/blacklist/${ip}`, JSON.stringify({ ttlSeconds: 600, reason: 'abuse report #42' }));
    expect(put.status).toBe(200);
    const one = await admin(proxy, 'GET', `/api/blacklist/${ip}`);
    expect(one.json).toMatchObject({ ip, listed: true, reason: 'abuse report #42' });
    expect(Date.parse(String(one.json.expiresAt)) - Date.now()).toBeGreaterThan(590_000);
    const all = await admin(proxy, 'GET', '/api/blacklist');
    expect(all.json.entries).toEqual([expect.objectContaining({ ip, reason: 'abuse report #42', since: expect.any(String), expiresAt: expect.any(String) })]);
    expect(await refusedAtAccept(proxy.port, ip)).toBe(true);
    expect(await get(proxy.port, '/', '127.0.10.2')).toBe(200);
    const del = await admin(proxy, 'DELETE', `/api/blacklist/${ip}`);
    expect(del.json).toMatchObject({ ip, removed: true, listed: false });
    expect((await admin(proxy, 'GET', `/api/blacklist/${ip}`)).json).toEqual({ ip, listed: false });
    expect(await get(proxy.port, '/', ip)).toBe(200);
  });

  it('IPv6 addresses are listed per /64, as sources are attributed', async () => {
    const put = await admin(proxy, 'PUT', '/api/blacklist/2001:db8:0:7:1::5', JSON.stringify({ ttlSeconds: 60, reason: 'v6' }));
    expect(put.json).toMatchObject({ ip: '2001:db8:0:7::/64', listed: true });
    expect(f.blockList.check('2001:db8:0:7:ffff::1', 'ipv6')).toBe(true);
    expect((await admin(proxy, 'GET', '/api/blacklist/2001:db8:0:7::99')).json).toMatchObject({ listed: true });
    expect((await admin(proxy, 'DELETE', '/api/blacklist/2001:db8:0:7::1')).json).toMatchObject({ removed: true });
    expect(f.blockList.check('2001:db8:0:7:ffff::1', 'ipv6')).toBe(false);
  });

  it('bad input gets 400 {"error"} and changes nothing', async () => {
    const before = JSON.stringify((await admin(proxy, 'GET', '/api/blacklist')).json);
    const cases: [string, string, string | undefined][] = [
      ['PUT', '/api/blacklist/999.1.1.1', '{"ttlSeconds":60}'],
      ['PUT', '/api/blacklist/not-an-ip', '{"ttlSeconds":60}'],
      ['PUT', '/api/blacklist/10.0.0.0%2F8', '{"ttlSeconds":60}'],
      ['PUT', '/api/blacklist/192.0.2.1', '{"ttlSeconds":'],
      ['PUT', '/api/blacklist/192.0.2.1', '[1,2]'],
      ['PUT', '/api/blacklist/192.0.2.1', '{"ttlSeconds":-5}'],
      ['PUT', '/api/blacklist/192.0.2.1', '{"ttlSeconds":"60"}'],
      ['PUT', '/api/blacklist/192.0.2.1', '{"ttlSeconds":999999}'],
      ['PUT', '/api/blacklist/192.0.2.1', '{"ttlSeconds":60,"reason":7}'],
      ['PUT', '/api/blacklist/192.0.2.1', '{"ttl":60}'],
      ['GET', '/api/blacklist/1.2.3', undefined],
      ['DELETE', '/api/blacklist/xyz', undefined],
      ['PUT', '/api/whitelist/10.0.0.0%2F8', undefined],
      ['PUT', '/api/whitelist/2001:db8::%2F47', undefined],
      ['PUT', '/api/whitelist/10.1.0.0%2F99', undefined],
      ['PUT', '/api/whitelist/banana', undefined],
      ['PUT', '/api/whitelist/10.2.0.0%2F16', '{"note":'],
      ['DELETE', '/api/whitelist/10.0.0.0%2F8', undefined],
      // Whitelisted sources are never blocked, not even by hand.
      ['PUT', '/api/blacklist/127.0.9.9', '{"ttlSeconds":60}'],
      // Config entries are changed in the config.
      ['DELETE', '/api/whitelist/127.0.9.0%2F24', undefined],
    ];
    for (const [m, path, body] of cases) {
      const r = await admin(proxy, m, path, body);
      expect(r.status, `${m} ${path} ${body}`).toBe(400);
      expect(typeof r.json.error, `${m} ${path}`).toBe('string');
    }
    const broad = await admin(proxy, 'PUT', '/api/whitelist/10.0.0.0%2F8');
    expect(broad.json.error).toMatch(/broader than \/16/);
    expect(JSON.stringify((await admin(proxy, 'GET', '/api/blacklist')).json)).toBe(before);
    expect((await admin(proxy, 'GET', '/api/whitelist')).json.entries).toEqual([expect.objectContaining({ ip: '127.0.9.0/24', origin: 'config' })]);
  });

  it('whitelist: /16 and /48 are accepted, listed and removable; a new entry lifts the bans it covers', async () => {
    await admin(proxy, 'PUT', '/api/blacklist/127.0.11.7', JSON.stringify({ ttlSeconds: 600 }));
    expect(f.banOf('127.0.11.7')).toBeDefined();
    const a = await admin(proxy, 'PUT', '/api/whitelist/127.0.11.0%2F24', JSON.stringify({ note: 'office' }));
    expect(a.json).toMatchObject({ ip: '127.0.11.0/24', origin: 'api', note: 'office' });
    expect(f.banOf('127.0.11.7')).toBeUndefined();
    expect(await get(proxy.port, '/', '127.0.11.7')).toBe(200);
    expect((await admin(proxy, 'PUT', '/api/whitelist/10.1.0.0%2F16')).status).toBe(200);
    expect((await admin(proxy, 'PUT', '/api/whitelist/2001:db8:5::%2F48')).status).toBe(200);
    const list = (await admin(proxy, 'GET', '/api/whitelist')).json.entries as { ip: string }[];
    expect(list.map((e) => e.ip).sort()).toEqual(['10.1.0.0/16', '127.0.11.0/24', '127.0.9.0/24', '2001:db8:5::/48']);
    expect((await admin(proxy, 'DELETE', '/api/whitelist/10.1.0.0%2F16')).json).toEqual({ ip: '10.1.0.0/16', removed: true });
    expect((await admin(proxy, 'DELETE', '/api/whitelist/2001:db8:5::%2F48')).json).toEqual({ ip: '2001:db8:5::/48', removed: true });
  });

  it('a whitelisted source is never blocked, whatever it sends', async () => {
    const ip = '127.0.9.5';
    const n = await flood(proxy.port, ip, f, 800);
    expect(n).toBe(800);
    expect(f.banOf(ip)).toBeUndefined();
    // Same flood from a source outside the whitelist is banned.
    await flood(proxy.port, '127.0.12.5', f, 1500);
    expect(f.banOf('127.0.12.5')).toBeDefined();
  });
});

describe('state survives a restart', () => {
  it('bans (manual and automatic), whitelist entries and repeat-offender history', async () => {
    const dir = tempDir();
    const cfg = {
      state: { dir }, admin: { host: '127.0.0.1', port: 0, token: TOKEN },
      domains: [domain(HOST, [origin.address])],
      filter: { mode: 'always', challenge: { enabled: false }, timeScale: 0.01 },
    };
    const p1 = await startProxy(cfg);
    const f1 = p1.app.filter as ScrubberFilter;
    await flood(p1.port, '127.0.13.1', f1);
    const auto = f1.banOf('127.0.13.1');
    expect(auto).toBeDefined();
    await admin(p1, 'PUT', '/api/blacklist/127.0.13.2', JSON.stringify({ ttlSeconds: 3600, reason: 'by hand' }));
    await admin(p1, 'PUT', '/api/whitelist/127.0.14.0%2F24', JSON.stringify({ note: 'partner' }));
    await p1.close();

    const p2 = await startProxy(cfg);
    try {
      const f2 = p2.app.filter as ScrubberFilter;
      const entries = (await admin(p2, 'GET', '/api/blacklist')).json.entries as { ip: string; reason: string }[];
      expect(entries.map((e) => e.ip).sort()).toEqual(['127.0.13.1', '127.0.13.2']);
      expect(entries.find((e) => e.ip === '127.0.13.2')?.reason).toBe('by hand');
      expect(f2.banOf('127.0.13.1')).toMatchObject({ rule: auto!.rule, expiresAt: auto!.expiresAt });
      expect(await refusedAtAccept(p2.port, '127.0.13.1')).toBe(true);
      expect(await refusedAtAccept(p2.port, '127.0.13.2')).toBe(true);
      expect((await admin(p2, 'GET', '/api/whitelist')).json.entries).toEqual([expect.objectContaining({ ip: '127.0.14.0/24', note: 'partner' })]);
      // The offender record survived: the next ban of the same source for the same attack is twice as long.
      const first = auto!.expiresAt - auto!.since;
      await admin(p2, 'DELETE', '/api/blacklist/127.0.13.1');
      await flood(p2.port, '127.0.13.1', f2);
      const again = f2.banOf('127.0.13.1')!;
      expect(again.rule).toBe(auto!.rule);
      expect((again.expiresAt - again.since) / first).toBeCloseTo(2, 1);
    } finally {
      await p2.close();
    }
  });
});

describe('reload', () => {
  it('a reloaded filter config takes effect for the next requests: off → always, a config whitelist entry added', async () => {
    const base = { listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0, token: '' }, log: { level: 'silent' }, domains: [domain(HOST, [origin.address])] };
    const p = await startProxy({ ...base, filter: { mode: 'off' } });
    try {
      const f = p.app.filter as ScrubberFilter;
      await flood(p.port, '127.0.16.1', f, 400);
      expect(f.banOf('127.0.16.1')).toBeUndefined();
      const next = loadConfigObject({ ...base, state: { dir: p.stateDir }, filter: { mode: 'always', challenge: { enabled: false }, whitelist: ['127.0.16.2'] } }, {});
      expect(next.ok).toBe(true);
      expect(p.app.reload(next)).toEqual({ ok: true });
      await flood(p.port, '127.0.16.1', f, 1500);
      expect(f.banOf('127.0.16.1')).toBeDefined();
      expect(await flood(p.port, '127.0.16.2', f, 600)).toBe(600);
      expect(f.banOf('127.0.16.2')).toBeUndefined();
    } finally {
      await p.close();
    }
  });
});

describe('mode off', () => {
  it('observes and counts, but never bans', async () => {
    const p = await startProxy({ domains: [domain(HOST, [origin.address])], filter: { mode: 'off' } });
    try {
      const f = p.app.filter as ScrubberFilter;
      const n = await flood(p.port, '127.0.15.1', f, 600);
      expect(n).toBe(600);
      expect(f.banOf('127.0.15.1')).toBeUndefined();
      const snap = f.snapshot();
      expect(snap.blacklistSize).toBe(0);
      expect(snap.counters.overflowsNotEnforced).toBeGreaterThan(0);
      expect(await get(p.port, '/', '127.0.15.1')).toBe(200);
    } finally {
      await p.close();
    }
    await sleep(10);
  });
});
