// Attacks against a real upstream through the real proxy, each from its own
// 127.x.y.z address, while browser-like visitors (page, then assets, think
// time, cookies, keep-alive) browse the same site from other addresses the
// whole time. Every attack must be banned within seconds and dropped at
// accept; no visitor may ever be banned. Mode `always`, challenge off: this
// file exercises the detector rules themselves (the challenge and attack mode
// have their own file).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { startOrigin, startProxy, sleep, domain, type Origin, type Proxy, replier } from './helpers/servers.ts';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';

const HOST = 'site.test';
const CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';
const BROWSER = { 'user-agent': CHROME, 'accept-language': 'en-US,en;q=0.9', 'accept-encoding': 'gzip' };
const PAGE_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

/** The protected site: pages, assets with their real Content-Types, a slow search, 404 for anything else. */
export function site(req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  const send = replier(res);
  if (req.method === 'POST') { req.resume(); req.on('end', () => send(200, 'text/html', '<p>posted</p>')); return; }
  if (path.endsWith('.css')) return send(200, 'text/css', 'body{}');
  if (path.endsWith('.js')) return send(200, 'application/javascript', 'void 0');
  if (path.endsWith('.png')) return send(200, 'image/png', 'PNG');
  if (path === '/' || path.startsWith('/page/') || path.startsWith('/article/')) return send(200, 'text/html; charset=utf-8', '<html>page</html>');
  if (path === '/search') return send(200, 'text/html; charset=utf-8', '<html>results</html>', 150);
  if (path.startsWith('/api/')) return send(200, 'application/json', '{"ok":true}');
  send(404, 'text/html', '<html>not found</html>');
}

interface Res { status: number; headers: http.IncomingHttpHeaders; error?: string }

function hit(port: number, path: string, o: { local: string; headers?: Record<string, string>; agent?: http.Agent | false; method?: string; timeoutMs?: number }): Promise<Res> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', localAddress: o.agent ? undefined : o.local, agent: o.agent ?? false, headers: { host: HOST, ...o.headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      res.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, headers: {}, error: e.code }));
    });
    req.setTimeout(o.timeoutMs ?? 3000, () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, headers: {}, error: e.code ?? e.message }));
    req.end();
  });
}

/** A visitor with a real browser's habits: page, then its assets over ≤ 6 keep-alive connections, cookies kept, think time. */
async function browse(port: number, local: string, stop: () => boolean, seed: number, ua = CHROME, thinkMs = 250): Promise<{ statuses: number[]; pages: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 6, localAddress: local });
  const jar = new Map<string, string>();
  const statuses: number[] = [];
  const get = async (path: string, accept: string) => {
    for (let hop = 0; hop < 3; hop++) {
      const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      const r = await hit(port, path, { local, agent, headers: { ...BROWSER, 'user-agent': ua, accept, ...(cookie ? { cookie } : {}) } });
      for (const c of r.headers['set-cookie'] ?? []) { const [kv] = c.split(';'); const i = kv.indexOf('='); jar.set(kv.slice(0, i), kv.slice(i + 1)); }
      if (r.status === 302 && r.headers.location) { path = r.headers.location; continue; }
      statuses.push(r.status);
      return r;
    }
  };
  let pages = 0;
  const assets = ['/static/site.css', '/static/app.js', '/static/vendor.js', '/img/logo.png', '/img/a.png', '/img/b.png', '/img/c.png', '/img/d.png', '/favicon.ico'];
  while (!stop() && pages < 40) {
    const n = (seed * 7 + pages * 3) % 50;
    const page = pages % 5 === 4 ? `/search?q=${'abcdefgh'.slice(0, 1 + (n % 8))}` : n % 3 === 0 ? `/page/${n}` : `/article/${n}`;
    await get(page, PAGE_ACCEPT);
    // First page: every asset; later ones: the browser cache holds the common ones, two new images per page.
    const want = pages === 0 ? assets : [`/img/p${n}.png`, `/img/q${n}.png`];
    await Promise.all(want.map((a) => get(a, a.endsWith('.css') ? 'text/css,*/*;q=0.1' : '*/*')));
    pages++;
    await sleep(thinkMs + ((seed * 131 + pages * 71) % 400));
  }
  agent.destroy();
  return { statuses, pages };
}

let origin: Origin;
let proxy: Proxy;
let filter: ScrubberFilter;
const detections: { attack: string; ip: string; ms: number; requests: number; rule: string }[] = [];
const visitors: Promise<{ statuses: number[]; pages: number }>[] = [];
const VISITORS = Array.from({ length: 12 }, (_, i) => `127.0.1.${i + 1}`);
// An office behind one NAT address: three people, three browsers, one source.
const OFFICE = '127.0.1.100';
const OFFICE_UAS = [CHROME, 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0', 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile/15E148 Safari/604.1'];
let stopVisitors = false;

async function waitBanned(ip: string, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (filter.banOf(ip)) return true; await sleep(20); }
  return false;
}

/** Runs `one` with some concurrency until the source is banned, or a count or time bound; returns the detection time. */
async function attack(name: string, ip: string, one: (i: number) => Promise<unknown>, o: { concurrency: number; max: number; ms: number }): Promise<number> {
  const started = Date.now();
  let sent = 0;
  const worker = async () => {
    while (!filter.banOf(ip) && sent < o.max && Date.now() - started < o.ms) { const i = sent++; await one(i); }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  const ms = Date.now() - started;
  const ban = filter.banOf(ip);
  detections.push({ attack: name, ip, ms, requests: sent, rule: ban?.rule ?? '(not banned)' });
  return ms;
}

beforeAll(async () => {
  origin = await startOrigin(site);
  proxy = await startProxy({
    domains: [domain(HOST, [origin.address])],
    filter: { mode: 'always', challenge: { enabled: false }, timeScale: 0.01 },
    limits: { headerTimeoutMs: 600, requestTimeoutMs: 5000, minBodyRateBytesPerSec: 1000, minBodyRateGraceMs: 500 },
  });
  filter = proxy.app.filter as ScrubberFilter;
  VISITORS.forEach((ip, i) => visitors.push(browse(proxy.port, ip, () => stopVisitors, i + 1)));
  OFFICE_UAS.forEach((ua, i) => visitors.push(browse(proxy.port, OFFICE, () => stopVisitors, 20 + i, ua, 1000)));
  await sleep(300);
});

afterAll(async () => {
  stopVisitors = true;
  await Promise.allSettled(visitors);
  await proxy?.close();
  await origin?.close();
  console.log('[filter detection times]\n' + detections.map((d) => `  ${d.attack.padEnd(22)} ${d.ip.padEnd(12)} ${String(d.ms).padStart(5)} ms  ${String(d.requests).padStart(5)} requests/connections  rule=${d.rule}`).join('\n'));
});

describe('attacks are banned within seconds, then dropped at accept', () => {
  it('a per-source flood (keep-alive, same page, as fast as it can)', async () => {
    const ip = '127.0.2.1';
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8, localAddress: ip });
    const ms = await attack('flood', ip, () => hit(proxy.port, '/page/1', { local: ip, agent, headers: { 'user-agent': 'flood/1.0', accept: '*/*' } }), { concurrency: 8, max: 3000, ms: 8000 });
    agent.destroy();
    expect(filter.banOf(ip)?.rule).toBeDefined();
    expect(ms).toBeLessThan(5000);
  });

  it('the banned address is refused at accept (no HTTP response, no 403) while another address is served', async () => {
    const ip = '127.0.2.1';
    expect(filter.banOf(ip)).toBeDefined();
    for (const s of proxy.app.listeners.servers) expect((s as unknown as { blockList: net.BlockList }).blockList.check(ip, 'ipv4')).toBe(true);
    const sock = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip });
    const data: Buffer[] = [];
    sock.on('data', (d) => data.push(d));
    sock.on('connect', () => sock.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
    await new Promise<void>((r) => { sock.on('close', () => r()); sock.on('error', () => {}); setTimeout(() => { sock.destroy(); r(); }, 2000); });
    expect(Buffer.concat(data).toString()).toBe('');
    const other = await hit(proxy.port, '/page/1', { local: '127.0.2.200', headers: BROWSER });
    expect(other.status).toBe(200);
  });

  it('a cache-busting flood (HULK: random query keys and User-Agents, a new connection per request)', async () => {
    const ip = '127.0.2.2';
    const uas = Array.from({ length: 25 }, (_, i) => `Mozilla/5.0 (Windows NT ${6 + (i % 4)}.${i}) Gecko/20100101 Firefox/${80 + i}.0`);
    const rnd = (n: number) => Math.random().toString(36).slice(2, 2 + n);
    const ms = await attack('cache-busting (HULK)', ip, (i) => hit(proxy.port, `/?${rnd(5)}=${rnd(8)}`, {
      local: ip, headers: { 'user-agent': uas[i % uas.length], accept: 'text/html,*/*', 'cache-control': 'no-cache', 'keep-alive': '115', connection: 'close' },
    }), { concurrency: 6, max: 2000, ms: 8000 });
    expect(filter.banOf(ip)).toBeDefined();
    expect(ms).toBeLessThan(5000);
  });

  it('404 scanning (probing for admin pages and leaked files)', async () => {
    const ip = '127.0.2.6';
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: ip });
    const paths = ['/.env', '/wp-login.php', '/admin/', '/phpmyadmin/', '/.git/config', '/backup.sql', '/config.php', '/server-status', '/xmlrpc.php', '/wp-admin/', '/.aws/credentials', '/debug', '/console', '/actuator/env', '/cgi-bin/test', '/old/', '/db.sql', '/admin.php', '/setup.php', '/install.php'];
    const ms = await attack('404 scanning', ip, (i) => hit(proxy.port, paths[i % paths.length] + (i >= paths.length ? `?${i}` : ''), { local: ip, agent, headers: { 'user-agent': 'Mozilla/5.0 zgrab/0.x', accept: '*/*' } }), { concurrency: 2, max: 500, ms: 8000 });
    agent.destroy();
    expect(filter.banOf(ip)?.rule).toBe('probe');
    expect(ms).toBeLessThan(5000);
  });

  it('404 scanning hidden among as many real pages (half the answers found) is still caught', async () => {
    // Found answers take back part of a miss (a NAT's people miss now and then among many found answers), so a
    // scanner must send two real requests per probe to hide; one per probe is still a scan.
    const ip = '127.0.2.16';
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: ip });
    const probes = ['/.env', '/wp-login.php', '/admin/', '/phpmyadmin/', '/.git/config', '/backup.sql', '/config.php', '/server-status'];
    const ms = await attack('diluted 404 scanning', ip, (i) => hit(proxy.port, i % 2 ? `/page/${i}` : `${probes[(i / 2) % probes.length]}?${i}`, { local: ip, agent, headers: { 'user-agent': 'Mozilla/5.0 zgrab/0.x', accept: '*/*' } }), { concurrency: 2, max: 1000, ms: 12000 });
    agent.destroy();
    expect(['probe', 'score']).toContain(filter.banOf(ip)?.rule);
    expect(ms).toBeLessThan(10000);
  });

  it('a browser-mimicking bot (browser headers, keep-alive, steady crawl of pages, never an asset)', async () => {
    const ip = '127.0.2.5';
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: ip });
    const ms = await attack('browser-mimicking bot', ip, async (i) => {
      await hit(proxy.port, `/article/${1000 + i}`, { local: ip, agent, headers: { ...BROWSER, accept: PAGE_ACCEPT } });
      await sleep(100);
    }, { concurrency: 1, max: 300, ms: 15000 });
    agent.destroy();
    expect(filter.banOf(ip)).toBeDefined();
    expect(ms).toBeLessThan(8000);
  });

  it('slowloris: connections that never finish their headers', async () => {
    const ip = '127.0.2.3';
    const started = Date.now();
    const socks: net.Socket[] = [];
    const closed: Promise<void>[] = [];
    const trickle = setInterval(() => { for (const s of socks) if (!s.destroyed && s.writable) s.write(`X-${Math.random().toString(36).slice(2, 6)}: a\r\n`); }, 150);
    // Waves of 6 connections, as the tool keeps reopening them; bounded to 5 waves.
    for (let wave = 0; wave < 5 && !filter.banOf(ip); wave++) {
      for (let i = 0; i < 6; i++) {
        const s = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip });
        s.on('error', () => {});
        // Reading, so that the end of the connection is seen.
        s.on('data', () => {});
        s.on('connect', () => s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${CHROME}\r\n`));
        closed.push(new Promise((r) => s.on('close', () => r())));
        socks.push(s);
      }
      await waitBanned(ip, 1500);
    }
    clearInterval(trickle);
    const ms = Date.now() - started;
    detections.push({ attack: 'slowloris', ip, ms, requests: socks.length, rule: filter.banOf(ip)?.rule ?? '(not banned)' });
    expect(filter.banOf(ip)?.rule).toBe('slow');
    expect(ms).toBeLessThan(6000);
    // Every connection of the source is closed (open ones at the ban, new ones at accept).
    await Promise.race([Promise.all(closed), sleep(2000)]);
    expect(socks.every((s) => s.destroyed)).toBe(true);
  });

  it('slow POST: bodies trickling in below the minimum rate', async () => {
    const ip = '127.0.2.4';
    const started = Date.now();
    const socks: net.Socket[] = [];
    const trickle = setInterval(() => { for (const s of socks) if (!s.destroyed && s.writable) s.write('a'); }, 200);
    for (let wave = 0; wave < 5 && !filter.banOf(ip); wave++) {
      for (let i = 0; i < 4; i++) {
        const s = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip });
        s.on('error', () => {});
        s.on('connect', () => s.write(`POST /login HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${CHROME}\r\nAccept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n`));
        socks.push(s);
      }
      await waitBanned(ip, 2500);
    }
    clearInterval(trickle);
    const ms = Date.now() - started;
    for (const s of socks) s.destroy();
    detections.push({ attack: 'slow POST', ip, ms, requests: socks.length, rule: filter.banOf(ip)?.rule ?? '(not banned)' });
    expect(filter.banOf(ip)?.rule).toBe('slow');
    expect(ms).toBeLessThan(8000);
  });
});

describe('people browsing at the same time', () => {
  it('were never banned and every page and asset was served', async () => {
    stopVisitors = true;
    const results = await Promise.all(visitors);
    const banned = [...VISITORS, OFFICE].filter((ip) => filter.banOf(ip));
    const total = results.reduce((n, r) => n + r.statuses.length, 0);
    const bad = results.flatMap((r) => r.statuses.filter((s) => s !== 200 && s !== 404));
    console.log(`[filter false positives] ${VISITORS.length} browser-like visitors + 3 behind one NAT address, ${results.reduce((n, r) => n + r.pages, 0)} pages, ${total} requests: ${banned.length} banned, ${bad.length} failed requests`);
    expect(banned).toEqual([]);
    expect(bad).toEqual([]);
    expect(results.every((r) => r.pages >= 3)).toBe(true);
    const snap = filter.snapshot();
    expect(snap.blacklistSize).toBeGreaterThanOrEqual(6);
    expect(snap.counters.bans).toBeGreaterThanOrEqual(6);
  });
});

describe('bans expire', () => {
  it('an automatic ban ends after its (time-scaled) ban time and the source is served again', async () => {
    const o = await startOrigin(site);
    // timeScale 0.001: the 5-minute minimum becomes 0.3 s, the flood rule's 30 minutes 1.8 s.
    const p = await startProxy({ domains: [domain(HOST, [o.address])], filter: { mode: 'always', challenge: { enabled: false }, timeScale: 0.001 } });
    try {
      const f = p.app.filter as ScrubberFilter;
      const ip = '127.0.3.1';
      const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: ip });
      for (let i = 0; i < 1000 && !f.banOf(ip); i++) await hit(p.port, '/api/items', { local: ip, agent, headers: { ...BROWSER, accept: '*/*' } });
      agent.destroy();
      const ban = f.banOf(ip);
      expect(ban?.rule).toBe('flood');
      expect(ban!.expiresAt - ban!.since).toBe(1800);
      expect((await hit(p.port, '/', { local: ip })).status).toBe(0);
      const end = Date.now() + 5000;
      while (f.banOf(ip) && Date.now() < end) await sleep(50);
      expect(f.banOf(ip)).toBeUndefined();
      expect((await hit(p.port, '/page/2', { local: ip, headers: BROWSER })).status).toBe(200);
      expect(f.snapshot().counters.bansExpired).toBe(1);
    } finally {
      await p.close();
      await o.close();
    }
  });
});
