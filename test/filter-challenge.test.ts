// Attack mode (filter.mode auto) and the cookie challenge, end to end: the
// domain learns its normal traffic from visitors, then a low-and-slow flood
// from many addresses on an expensive path (each address far below every
// per-source threshold) switches attack mode on; untrusted sources get a 302
// with a signed cookie, the bots never return it and are banned, the visitors
// keep browsing. An upstream that starts failing with 503 bans the most
// suspicious sources first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startOrigin, startProxy, sleep, domain, type Origin, type Proxy, replier } from './helpers/servers.ts';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';
import { loadConfigObject } from '../src/config/load.ts';

const HOST = 'shop.test';
const CHROME = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15';
const BROWSER = { 'user-agent': CHROME, 'accept-language': 'de-DE,de;q=0.9,en;q=0.8' };
const PAGE_ACCEPT = 'text/html,application/xhtml+xml,*/*;q=0.8';

let failing = false;
function site(req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  const send = replier(res);
  if (failing) return send(503, 'text/html', '<html>overloaded</html>');
  if (path.endsWith('.css')) return send(200, 'text/css', 'body{}');
  if (path.endsWith('.js')) return send(200, 'text/javascript', 'void 0');
  if (path.endsWith('.png') || path.startsWith('/media/')) return send(200, 'image/png', 'PNG');
  if (path === '/search') return send(200, 'text/html', '<html>results</html>', 150);
  if (path === '/' || path.startsWith('/p/')) return send(200, 'text/html', '<html>page</html>');
  send(404, 'text/html', 'not found');
}

interface Res { status: number; headers: http.IncomingHttpHeaders }
function hit(port: number, path: string, o: { local: string; headers?: Record<string, string>; agent?: http.Agent }): Promise<Res> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, localAddress: o.agent ? undefined : o.local, agent: o.agent ?? false, headers: { host: HOST, ...o.headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      res.on('error', () => resolve({ status: 0, headers: {} }));
    });
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, headers: {} }));
    req.end();
  });
}

/** A browser: follows the challenge with its cookie, page then assets, think time. Records challenges met. */
async function browse(port: number, local: string, stop: () => boolean, seed: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 6, localAddress: local });
  const jar = new Map<string, string>();
  const statuses: number[] = [];
  let challenges = 0;
  const get = async (path: string, accept: string) => {
    for (let hop = 0; hop < 3; hop++) {
      const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      const r = await hit(port, path, { local, agent, headers: { ...BROWSER, accept, ...(cookie ? { cookie } : {}) } });
      for (const c of r.headers['set-cookie'] ?? []) { const [kv] = c.split(';'); const i = kv.indexOf('='); jar.set(kv.slice(0, i), kv.slice(i + 1)); }
      if (r.status === 302 && r.headers.location) { if (r.headers['x-scrubber'] === 'challenge') challenges++; path = r.headers.location; continue; }
      statuses.push(r.status);
      return r;
    }
    statuses.push(-302);
  };
  let pages = 0;
  while (!stop() && pages < 40) {
    const n = (seed * 13 + pages * 7) % 60;
    await get(pages % 4 === 3 ? `/search?q=item${n}` : `/p/${n}`, PAGE_ACCEPT);
    const want = pages === 0 ? ['/s/site.css', '/s/app.js', '/s/logo.png', '/s/a.png', '/s/b.png'] : [`/media/${n}`, `/media/${n + 1}`];
    await Promise.all(want.map((a) => get(a, '*/*')));
    pages++;
    await sleep(700 + ((seed * 97 + pages * 53) % 500));
  }
  agent.destroy();
  return { statuses, pages, challenges };
}

async function until(cond: () => boolean, ms: number, step = 25): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (cond()) return true; await sleep(step); }
  return cond();
}

describe('attack mode and the cookie challenge (mode auto)', () => {
  let origin: Origin;
  let proxy: Proxy;
  let filter: ScrubberFilter;
  const VISITORS = Array.from({ length: 4 }, (_, i) => `127.0.5.${i + 1}`);
  let stop = false;
  let visitors: Promise<{ statuses: number[]; pages: number; challenges: number }>[] = [];

  beforeAll(async () => {
    origin = await startOrigin(site);
    proxy = await startProxy({
      domains: [domain(HOST, [origin.address])],
      filter: { mode: 'auto', timeScale: 0.01, attack: { learnSeconds: 2, enterSeconds: 1, exitSeconds: 2, minRps: 15, rateFactor: 3, errorRatio: 0.3 } },
    });
    filter = proxy.app.filter as ScrubberFilter;
  });

  afterAll(async () => {
    stop = true;
    await Promise.allSettled(visitors);
    await proxy?.close();
    await origin?.close();
  });

  it('learns the normal traffic from visitors without filtering anyone', async () => {
    visitors = VISITORS.map((ip, i) => browse(proxy.port, ip, () => stop, i + 1));
    expect(await until(() => (filter.attackState(HOST)?.learned ?? 0) >= 3, 6000)).toBe(true);
    const st = filter.attackState(HOST)!;
    expect(st.under).toBe(false);
    expect(st.baselineRps).toBeGreaterThan(0);
    expect(filter.snapshot().counters.challenges ?? 0).toBe(0);
  });

  it('a low-and-slow flood from 50 addresses on an expensive path: attack mode, challenge, every bot banned within seconds', async () => {
    const BOTS = Array.from({ length: 50 }, (_, i) => `127.0.6.${i + 1}`);
    const seenBefore = origin.seen.filter((r) => r.url.startsWith('/search')).length;
    const started = Date.now();
    let sent = 0;
    let attackSeenAt = 0;
    const detected = new Map<string, number>();
    // Each bot: about 2 requests/s on the slow search, browser-like headers, no cookies kept, a new connection each time.
    const bot = async (ip: string, k: number) => {
      await sleep(k * 10);
      for (let i = 0; i < 60 && Date.now() - started < 12000; i++) {
        if (filter.banOf(ip)) { if (!detected.has(ip)) detected.set(ip, Date.now() - started); break; }
        sent++;
        await hit(proxy.port, `/search?q=cheap+${k}+${i % 3}`, { local: ip, headers: { ...BROWSER, accept: PAGE_ACCEPT } });
        if (!attackSeenAt && filter.snapshot().underAttack.includes(HOST)) attackSeenAt = Date.now() - started;
        await sleep(300);
      }
      if (filter.banOf(ip) && !detected.has(ip)) detected.set(ip, Date.now() - started);
    };
    await Promise.all(BOTS.map((ip, k) => bot(ip, k)));
    const reached = origin.seen.filter((r) => r.url.startsWith('/search')).length - seenBefore;
    const times = [...detected.values()].sort((a, b) => a - b);
    console.log(`[filter low-and-slow distributed] 50 bots at ~2 req/s each on a 150 ms path: attack mode after ${attackSeenAt} ms; banned ${detected.size}/50, ` +
      `first ${times[0]} ms, median ${times[Math.floor(times.length / 2)]} ms, last ${times[times.length - 1]} ms; ${sent} bot requests sent, ${reached} reached the upstream`);
    expect(attackSeenAt).toBeGreaterThan(0);
    expect(detected.size).toBe(BOTS.length);
    // Within 8 s of attack mode: an ignored challenge counts at most once a second (a browser with cookies off must not
    // be banned for one page load), so the challenge rule fills in about six; counted from the flood's start, the last
    // ban came at 7.3–7.8 s on a quiet machine, too close to a bound of 8 s from the start under load (8.06 s in CI).
    expect(times[times.length - 1] - attackSeenAt).toBeLessThan(8000);
    expect(BOTS.every((ip) => filter.banOf(ip)?.rule === 'challenge')).toBe(true);
    // Once challenged, the bots do not reach the upstream at volume.
    expect(reached).toBeLessThan(sent / 2);
  });

  it('a new visitor arriving during the attack is challenged once, comes back with the cookie and is served', async () => {
    expect(filter.snapshot().underAttack).toContain(HOST);
    const ip = '127.0.5.50';
    const first = await hit(proxy.port, '/p/7', { local: ip, headers: { ...BROWSER, accept: PAGE_ACCEPT } });
    expect(first.status).toBe(302);
    expect(first.headers['x-scrubber']).toBe('challenge');
    expect(first.headers.location).toBe('/p/7');
    const cookie = String(first.headers['set-cookie']?.[0]).split(';')[0];
    expect(cookie).toMatch(/^scrubber_trust=[0-9a-z]+\.[\w-]{11}\.[\w-]{22}$/);
    const second = await hit(proxy.port, '/p/7', { local: ip, headers: { ...BROWSER, accept: PAGE_ACCEPT, cookie } });
    expect(second.status).toBe(200);
    // Trust is the client's (its cookie), not its address's: with the cookie it passes for a while; the same address
    // without it (another person behind the same NAT) is asked for a cookie of its own. Assets never need one.
    expect((await hit(proxy.port, '/p/8', { local: ip, headers: { ...BROWSER, accept: PAGE_ACCEPT, cookie } })).status).toBe(200);
    expect((await hit(proxy.port, '/p/8', { local: ip, headers: { ...BROWSER, accept: PAGE_ACCEPT } })).headers['x-scrubber']).toBe('challenge');
    expect((await hit(proxy.port, '/s/site.css', { local: '127.0.5.51', headers: BROWSER })).status).toBe(200);
    // The cookie is not bound to the address: the client keeps its trust when its address changes (a NAT pool, IPv4
    // and IPv6); copied to many networks it stops being honoured (filter-nat.test.ts).
    expect((await hit(proxy.port, '/p/7', { local: '127.0.5.52', headers: { ...BROWSER, accept: PAGE_ACCEPT, cookie } })).status).toBe(200);
  });

  it('the visitors browsing through it all were never banned nor refused', async () => {
    stop = true;
    const results = await Promise.all(visitors);
    const banned = VISITORS.filter((ip) => filter.banOf(ip));
    const bad = results.flatMap((r) => r.statuses.filter((s) => s !== 200));
    console.log(`[filter false positives, under attack] ${VISITORS.length} visitors, ${results.reduce((n, r) => n + r.pages, 0)} pages, ${results.reduce((n, r) => n + r.statuses.length, 0)} requests, ${results.reduce((n, r) => n + r.challenges, 0)} challenges met: ${banned.length} banned, ${bad.length} failed`);
    expect(banned).toEqual([]);
    expect(bad).toEqual([]);
  });

  it('attack mode ends after exitSeconds of calm', async () => {
    expect(await until(() => !filter.snapshot().underAttack.includes(HOST), 8000, 100)).toBe(true);
    const r = await hit(proxy.port, '/p/1', { local: '127.0.5.60', headers: { ...BROWSER, accept: PAGE_ACCEPT } });
    expect(r.status).toBe(200);
  });

  it('an upstream that starts failing with 503 is a sign of attack; the most suspicious source is banned first', async () => {
    // A crawler that stays under every bucket but has a raised score.
    const suspect = '127.0.7.1';
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: suspect });
    for (let i = 0; i < 9; i++) await hit(proxy.port, `/p/${100 + i}`, { local: suspect, agent, headers: { 'user-agent': 'Mozilla/5.0 crawler', accept: '*/*' } });
    agent.destroy();
    expect(filter.banOf(suspect)).toBeUndefined();
    const calmVisitor = '127.0.7.2';
    await hit(proxy.port, '/p/1', { local: calmVisitor, headers: { ...BROWSER, accept: PAGE_ACCEPT } });
    failing = true;
    const started = Date.now();
    try {
      // Ordinary traffic now meets 503s from the upstream.
      for (let i = 0; i < 200 && !filter.banOf(suspect) && Date.now() - started < 6000; i++) {
        await hit(proxy.port, `/p/${i % 5}`, { local: `127.0.8.${1 + (i % 50)}`, headers: { ...BROWSER, accept: PAGE_ACCEPT } });
        await sleep(20);
      }
    } finally { failing = false; }
    const ban = filter.banOf(suspect);
    console.log(`[filter upstream 503] attack mode on upstream failure and suspect banned after ${Date.now() - started} ms: ${ban?.reason}`);
    expect(filter.attackState(HOST)?.upstreamFailing).toBe(true);
    expect(ban?.rule).toBe('suspect');
    expect(filter.banOf(calmVisitor)).toBeUndefined();
  });
});

describe('domains[].challenge: false', () => {
  let apiOrigin: Origin;
  let p: Proxy;
  beforeAll(async () => {
    apiOrigin = await startOrigin(site);
    p = await startProxy({
      domains: [domain(HOST, [apiOrigin.address]), domain('api.shop.test', [apiOrigin.address], { challenge: false })],
      filter: { mode: 'always' },
    });
  });
  afterAll(async () => { await p?.close(); await apiOrigin?.close(); });

  it('a domain that opts out never sends the cookie challenge, while the other domain still does', async () => {
    const client = '127.0.9.1';
    // An API client: no cookies kept, no browser headers.
    for (let i = 0; i < 5; i++) {
      const r = await hit(p.port, `/p/${i}`, { local: client, headers: { host: 'api.shop.test', 'user-agent': 'orders-sync/2.1', accept: 'application/json' } });
      expect(r.status).toBe(200);
      expect(r.headers['x-scrubber']).toBeUndefined();
    }
    const web = await hit(p.port, '/p/1', { local: '127.0.9.2', headers: { ...BROWSER, accept: PAGE_ACCEPT } });
    expect(web.status).toBe(302);
    expect(web.headers['x-scrubber']).toBe('challenge');
    expect((p.app.filter as ScrubberFilter).banOf(client)).toBeUndefined();
  });

  it.each([['no'], [1], [null]])('challenge %j is refused with a problem naming domains[0].challenge', (v) => {
    const r = loadConfigObject({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:9'], challenge: v }] }, {});
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.some((s) => s.startsWith('domains[0].challenge'))).toBe(true);
  });
});
