// The adaptive upstream limit end to end, in the default config (no
// domains[].maxInflight, filter.mode auto, nothing learned): a real origin
// whose latency grows with its load (a pool of worker slots, a queue in front
// of them, service time growing with the slots busy), real clients each bound
// to its own loopback address.
//   - A rotating flood (a new address every few requests, pages only) that
//     starts together with the visitors, on a proxy with no history: the
//     origin saturates without failing (its queue is long and patient), so
//     only saturation can tell; attack mode must start by itself, the flood
//     must stop reaching the origin, and the visitors (browsers: cookie jar,
//     redirects followed, assets) must be served.
//   - A flash crowd of new visitors that the origin can serve: attack mode
//     never starts and nobody is challenged.
//   - Long polls (the application holds each request for seconds before its
//     headers) more than the limit: they must not hold the domain's limit.
//   - Browser-perfect bots (cookies kept, redirects followed) on an expensive
//     search, each taking many times a person's share of a saturated origin:
//     the people keep being served, the bots are banned by their share —
//     also when they outnumber the people (who came first: the measure).
// Every loop is bounded in count and in time.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import type net from 'node:net';
import { once } from 'node:events';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';
import { startProxy, domain, sleep, until, type Proxy } from './helpers/servers.ts';
import { attackSeconds, startPoolOrigin, type PoolOrigin } from './helpers/pool-origin.ts';

const HOST = 'shop.test';
const CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';
const PAGE_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

interface Res { status: number; location?: string; cookies: string[] }
function get(port: number, path: string, o: { local: string; agent: http.Agent | false; accept?: string; cookie?: string; timeoutMs?: number }): Promise<Res> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { host: HOST, 'user-agent': CHROME, accept: o.accept ?? '*/*', 'accept-language': 'en-US,en;q=0.9' };
    if (o.cookie) headers.cookie = o.cookie;
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent: o.agent, localAddress: o.agent ? undefined : o.local }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, cookies: (res.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]) }));
      res.on('error', () => resolve({ status: 0, cookies: [] }));
    });
    req.setTimeout(o.timeoutMs ?? 3000, () => req.destroy());
    req.on('error', () => resolve({ status: 0, cookies: [] }));
    req.end();
  });
}

interface Visits { pages: { at: number; ok: boolean }[]; challenged: number }
/** A browser: a page (redirects followed with its cookie jar), then its assets, then a pause; until `until` or 40 pages. */
async function browse(port: number, local: string, until: number, seed: number, thinkMs: number, v: Visits, pageOf = (n: number) => `/products/${(seed * 7 + n) % 30}`): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: local });
  const jar = new Map<string, string>();
  const cookie = () => [...jar].map(([k, x]) => `${k}=${x}`).join('; ');
  for (let n = 0; n < 40 && Date.now() < until; n++) {
    const at = Date.now();
    let path = pageOf(n), r: Res = { status: 0, cookies: [] };
    for (let hop = 0; hop < 3; hop++) {
      r = await get(port, path, { local, agent, accept: PAGE_ACCEPT, cookie: cookie() });
      for (const c of r.cookies) { const i = c.indexOf('='); jar.set(c.slice(0, i), c.slice(i + 1)); }
      if (r.status !== 302 || !r.location) break;
      v.challenged++;
      path = new URL(r.location, `http://${HOST}`).pathname;
    }
    const ok = r.status === 200 && Date.now() - at < 3000;
    v.pages.push({ at, ok });
    if (ok) await Promise.all(['/static/a.css', `/static/i${n % 5}.png`].map((a) => get(port, a, { local, agent, cookie: cookie() })));
    await sleep(thinkMs + ((seed * 131 + n * 71) % 300));
  }
  agent.destroy();
}

/** Rotating sources: every source sends `perSource` pages (no cookies, no redirects followed) and is never seen again; `inflight` at once. */
async function rotatingFlood(port: number, until: number, inflight: number, perSource: number): Promise<number> {
  let next = 0, sent = 0;
  const worker = async () => {
    while (Date.now() < until && sent < 60_000) {
      const i = next++;
      const local = `127.0.${90 + Math.floor(i / perSource / 254) % 10}.${(Math.floor(i / perSource) % 254) + 1}`;
      sent++;
      await get(port, `/search?q=${i}`, { local, agent: false, accept: PAGE_ACCEPT, timeoutMs: 2000 });
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  return sent;
}

let proxy: Proxy | null = null;
let origin: PoolOrigin | null = null;
afterEach(async () => { await proxy?.close(); await origin?.close(); proxy = null; origin = null; });

describe('adaptive upstream limit, default config, real sockets', () => {
  it('a rotating flood on a proxy with no history and no maxInflight: attack mode starts by saturation, the flood stops reaching the origin, visitors are served', async () => {
    // Four workers, 20 ms a page; a patient queue (no 503 before 5 s): the origin slows down, it does not fail.
    origin = await startPoolOrigin(4, 20, 5000);
    proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`])], filter: { timeScale: 0.01 } });
    const f = proxy.app.filter as ScrubberFilter;
    const start = Date.now(), end = start + 9000;
    const v: Visits = { pages: [], challenged: 0 };
    let engagedAt = 0;
    const watch = (async () => { while (Date.now() < end && !engagedAt) { if (f.snapshot().underAttack.includes(HOST)) engagedAt = Date.now(); await sleep(100); } })();
    const users = Array.from({ length: 12 }, (_, i) => browse(proxy!.port, `127.0.71.${i + 1}`, end, i, 400, v));
    const sent = await rotatingFlood(proxy.port, end, 60, 4);
    await Promise.all([...users, watch]);

    expect(sent).toBeGreaterThan(500);
    expect(engagedAt, 'attack mode never started').toBeGreaterThan(0);
    expect(engagedAt - start).toBeLessThanOrEqual(6000);
    expect(f.attackState(HOST)!.reason).toMatch(/origin saturated/);
    expect(f.attackState(HOST)!.learned).toBeLessThan(30);
    // The origin never failed: only saturation could have told.
    expect(origin.rejected).toBe(0);
    // Attack requests at the origin: the peak second against the last two seconds of the flood.
    const { secs, peak, tail } = attackSeconds(origin, end);
    expect(peak).toBeGreaterThan(50);
    expect(Math.max(...tail), JSON.stringify(secs)).toBeLessThanOrEqual(0.1 * peak);
    // Visitors: served once the filter engaged (a cookie round trip at most once each).
    const after = v.pages.filter((p) => p.at >= engagedAt + 1000);
    expect(after.length).toBeGreaterThan(30);
    expect(after.filter((p) => p.ok).length / after.length).toBeGreaterThanOrEqual(0.95);
    expect(v.challenged).toBeLessThanOrEqual(12);
    const bans = f.bans().map((b) => b.ip);
    expect(bans.filter((s) => s.startsWith('127.0.71.'))).toEqual([]);
  }, 30_000);

  it('long polls beyond the limit do not hold it: an ordinary request behind them is answered within about a second', async () => {
    const held: http.ServerResponse[] = [];
    const polls = http.createServer((req, res) => {
      req.resume();
      if (req.url!.startsWith('/poll')) { held.push(res); setTimeout(() => { res.writeHead(200, { 'content-length': 2 }); res.end('{}'); }, 4000); return; }
      res.writeHead(200, { 'content-type': 'text/html', 'content-length': 2 });
      res.end('ok');
    });
    polls.listen(0, '127.0.0.1');
    await once(polls, 'listening');
    try {
      proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${(polls.address() as net.AddressInfo).port}`])] });
      // 30 long polls from 6 addresses (under the per-source cap): more than the limit's 20 to start with.
      const waiting = Array.from({ length: 30 }, (_, i) => get(proxy!.port, `/poll?i=${i}`, { local: `127.0.73.${(i % 6) + 1}`, agent: false, timeoutMs: 8000 }));
      expect(await until(() => held.length >= 20, 2000)).toBe(true);
      const t = Date.now();
      const r = await get(proxy.port, '/page', { local: '127.0.73.50', agent: false, timeoutMs: 6000 });
      const took = Date.now() - t;
      expect(r.status).toBe(200);
      expect(took).toBeLessThan(2500);
      expect((await Promise.all(waiting)).map((x) => x.status)).toEqual(Array(30).fill(200));
      expect(proxy.app.pipeline.queues.get(HOST)!.queued).toBe(0);
    } finally {
      polls.closeAllConnections();
      polls.close();
    }
  }, 20_000);

  it('browser-perfect bots taking many times a person\'s share of a saturated origin: people are served, the bots are banned by fair share', async () => {
    // Two workers; a search costs 60 ms, a page 10.
    origin = await startPoolOrigin(2, 10, 5000, 60);
    proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`])], filter: { mode: 'always', timeScale: 0.01, fairShare: { banAfterSeconds: 3 } } });
    const f = proxy.app.filter as ScrubberFilter;
    const end = Date.now() + 9000;
    const people: Visits = { pages: [], challenged: 0 };
    const users = Array.from({ length: 16 }, (_, i) => browse(proxy!.port, `127.0.74.${i + 1}`, end, i, 700, people));
    // Four bots, each three browsers' worth of searches back to back, with the cookie jar a browser keeps.
    const bot = async (b: number) => {
      const local = `127.0.75.${b + 1}`;
      const agent = new http.Agent({ keepAlive: true, maxSockets: 3, localAddress: local });
      const jar = new Map<string, string>();
      const loop = async () => {
        for (let n = 0; n < 400 && Date.now() < end && !f.banOf(local); n++) {
          const r = await get(proxy!.port, `/search?q=${n}`, { local, agent, accept: PAGE_ACCEPT, cookie: [...jar].map(([k, x]) => `${k}=${x}`).join('; ') });
          for (const c of r.cookies) { const i = c.indexOf('='); jar.set(c.slice(0, i), c.slice(i + 1)); }
          if (r.status === 0) await sleep(50);
        }
      };
      await Promise.all([loop(), loop(), loop()]);
      agent.destroy();
    };
    await Promise.all([...users, ...Array.from({ length: 4 }, (_, b) => bot(b))]);

    const banned = f.bans();
    const bots = banned.filter((b) => b.ip.startsWith('127.0.75.'));
    expect(bots.length, JSON.stringify(banned)).toBeGreaterThanOrEqual(3);
    expect(bots.every((b) => b.rule === 'fair-share')).toBe(true);
    expect(bots[0].reason).toMatch(/origin time in .*× a typical source's .* while the origin was saturated/);
    expect(banned.filter((b) => b.ip.startsWith('127.0.74.'))).toEqual([]);
    expect(people.pages.length).toBeGreaterThan(80);
    expect(people.pages.filter((p) => p.ok).length / people.pages.length).toBeGreaterThanOrEqual(0.95);
  }, 30_000);

  it('browser-perfect bots that outnumber the people, in the default mode: attack mode starts, the people are the measure, the bots are banned by fair share', async () => {
    // Eight workers (the adaptive limit's floor: a smaller origin queues inside, see the README's known gaps); a search
    // costs 60 ms, a page 10.
    origin = await startPoolOrigin(8, 10, 5000, 60);
    proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`])], filter: { timeScale: 0.01, fairShare: { banAfterSeconds: 3 } } });
    const f = proxy.app.filter as ScrubberFilter;
    const start = Date.now(), end = start + 19_000;
    const people: Visits = { pages: [], challenged: 0 }, bots: Visits = { pages: [], challenged: 0 };
    const users = Array.from({ length: 10 }, (_, i) => browse(proxy!.port, `127.0.76.${i + 1}`, end, i, 700, people));
    // Four times as many bots, 6 s later (the people are incumbents: they used the origin well before it saturated):
    // each a browser (cookie jar, redirects, assets) pausing 50–350 ms where a person pauses 700–1000, four searches
    // in five pages. Pauses of 100–400 ms made a bot's share only 3.5–4× a person's on a loaded machine (its waits
    // for the origin count in its pace as much as its pauses), at the line of overShareRatio 4: no test of the rule.
    const swarm = Array.from({ length: 40 }, async (_, i) => {
      await sleep(6000 + i * 20);
      await browse(proxy!.port, `127.0.77.${i + 1}`, end, i, 50, bots, (n) => (n % 5 === 4 ? `/products/${n % 30}` : `/search?q=${i}-${n}`));
    });
    await Promise.all([...users, ...swarm]);

    const banned = f.bans();
    const botBans = banned.filter((b) => b.ip.startsWith('127.0.77.'));
    expect(banned.filter((b) => b.ip.startsWith('127.0.76.')), JSON.stringify(banned)).toEqual([]);
    // 40 of 40 on an idle machine; under the full suite's load bans come later (16 of 40 by 14 s in one run). 0 before.
    expect(botBans.length, JSON.stringify(banned)).toBeGreaterThanOrEqual(10);
    expect(botBans.every((b) => b.rule === 'fair-share')).toBe(true);
    expect(people.pages.filter((p) => p.ok).length / people.pages.length).toBeGreaterThanOrEqual(0.9);
  }, 30_000);

  it('requests a flood queued before attack mode get the challenge at their turn, not a place at the origin', async () => {
    // Two workers and a 200 ms search; the limit held at 2 (maxInflight), so 30 navigations at once mostly wait.
    origin = await startPoolOrigin(2, 10, 20_000, 200);
    proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`], { maxInflight: 2 })], filter: { timeScale: 0.01 } });
    const f = proxy.app.filter as ScrubberFilter;
    const answers = Array.from({ length: 30 }, (_, i) => get(proxy!.port, `/search?q=${i}`, { local: `127.0.78.${i + 1}`, agent: false, accept: PAGE_ACCEPT, timeoutMs: 8000 }));
    await sleep(300);
    // The domain comes under attack while they wait (here: another node says so).
    f.detector.attacks.remoteAttack(HOST, true, Date.now(), 'test');
    const statuses = (await Promise.all(answers)).map((r) => r.status);
    const atOrigin = [...origin.perSecond.values()].reduce((n, c) => n + c.legit + c.attack, 0);
    expect(statuses.filter((s) => s === 302).length, JSON.stringify(statuses)).toBeGreaterThanOrEqual(20);
    expect(statuses.every((s) => s === 200 || s === 302), JSON.stringify(statuses)).toBe(true);
    expect(atOrigin).toBeLessThanOrEqual(10);
  }, 20_000);

  it('a flash crowd of new visitors that the origin can serve: attack mode never starts, nobody is challenged, every page is served', async () => {
    origin = await startPoolOrigin(8, 10, 5000);
    proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`])], filter: { timeScale: 0.01 } });
    const f = proxy.app.filter as ScrubberFilter;
    const end = Date.now() + 7000;
    const v: Visits = { pages: [], challenged: 0 };
    let engaged = false;
    const watch = (async () => { while (Date.now() < end) { if (f.snapshot().underAttack.includes(HOST)) engaged = true; await sleep(100); } })();
    // 60 new visitors arriving within a second, each browsing a page every 300–600 ms.
    const crowd = Array.from({ length: 60 }, async (_, i) => { await sleep((i * 17) % 1000); await browse(proxy!.port, `127.0.72.${i + 1}`, end, i, 300, v); });
    await Promise.all([...crowd, watch]);

    expect(v.pages.length).toBeGreaterThan(400);
    expect(engaged).toBe(false);
    expect(v.challenged).toBe(0);
    expect(v.pages.filter((p) => p.ok).length).toBe(v.pages.length);
    expect(f.snapshot().counters.attacksStarted ?? 0).toBe(0);
  }, 30_000);
});
