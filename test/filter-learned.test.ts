// What the filter learned of a domain's normal traffic survives a restart
// (the embedded store under state.dir): the attack-mode baseline, an attack
// under way, the paths served as static, and each path's usual body size.
// Real proxy restarted on the same state dir, real origin, real clients.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/store/db.ts';
import { startOrigin, startProxy, request, domain, replier, until, sleep, tempDir, type Origin, type Proxy, type RawResponse } from './helpers/servers.ts';

const HOST = 'learn.test';
const BROWSER = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0', accept: 'text/html,*/*;q=0.8', 'accept-language': 'en' };
let origin: Origin;
let failing = false;

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    const send = replier(res);
    const path = (req.url ?? '/').split('?')[0];
    if (failing) return send(503, 'text/html', '<html>overloaded</html>');
    if (req.method === 'POST') { req.resume(); req.on('end', () => send(303, 'text/html', '')); return; }
    // A stylesheet with no file extension: only its Content-Type says it is static.
    if (path === '/theme') return send(200, 'text/css', 'body{}');
    if (path.endsWith('.css')) return send(200, 'text/css', 'body{}');
    if (path.endsWith('.js')) return send(200, 'application/javascript', 'void 0');
    send(200, 'text/html; charset=utf-8', '<html>page</html>');
  });
});
afterAll(async () => { await origin?.close(); });

const config = (dir: string, mode: 'auto' | 'always') => ({
  state: { dir },
  domains: [domain(HOST, [origin.address])],
  filter: { mode, attack: { learnSeconds: 2, enterSeconds: 1, exitSeconds: 30, minRps: 1000, errorRatio: 0.3 } },
});
const hit = (p: Proxy, path: string, local: string, o: { method?: string; body?: Buffer } = {}) =>
  request(p.url + path, { method: o.method ?? 'GET', localAddress: local, body: o.body, headers: { host: HOST, ...BROWSER, ...(o.body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(o.body.length) } : {}) } })
    .catch((e: NodeJS.ErrnoException): RawResponse => ({ status: 0, headers: {}, body: e.code ?? '' }));
const listed = async (p: Proxy, ip: string) => (await request(p.adminUrl + `/api/blacklist/${ip}`)).body.includes('"listed":true');
interface AttackView { under: boolean; since: string | null; reason: string | null; baselineRps: number; baselineLatencyMs: number; learnedSeconds: number }
const attackOf = async (p: Proxy): Promise<AttackView> =>
  (JSON.parse((await request(p.adminUrl + '/api/domains')).body) as { domains: { name: string; attack: AttackView }[] }).domains.find((d) => d.name === HOST)!.attack;

describe('learned traffic across a restart', () => {
  it('the baseline, the static paths and the usual body sizes come back; a restarted proxy judges with them at once', async () => {
    const dir = tempDir();
    const p1 = await startProxy(config(dir, 'auto'));
    const visitor = '127.0.78.1';
    let before: AttackView;
    try {
      // Visitors browse (pages, assets, the extension-less stylesheet) for a few seconds, so the domain learns a baseline;
      // the first of them logs in a few times with a small form.
      const visitors = ['127.0.78.1', '127.0.78.4', '127.0.78.5', '127.0.78.6'];
      for (let round = 0; round < 4; round++) {
        await Promise.all(visitors.map(async (ip) => {
          for (const p of ['/', '/site.css', '/app.js', '/theme', `/page${round}`]) expect((await hit(p1, p, ip)).status).toBe(200);
        }));
        if (round === 0) for (let i = 0; i < 3; i++) expect((await hit(p1, '/login', visitor, { method: 'POST', body: Buffer.from(`user=u${i}&password=secret`) })).status).toBe(303);
        await sleep(900);
      }
      expect(await until(() => (p1.app.filter.attackState(HOST)?.learned ?? 0) >= 3, 3000)).toBe(true);
      before = await attackOf(p1);
      expect(before.under).toBe(false);
      expect(before.baselineRps).toBeGreaterThan(1);
    } finally {
      await p1.close();
    }
    // As saved on close (the timer is stopped: the state no longer moves).
    const saved = p1.app.filter.attackState(HOST)!;
    // The API rounds to the second (3.504 s saved was shown as 4).
    expect(Math.round(saved.learned)).toBeGreaterThanOrEqual(before.learnedSeconds);

    // Restarted: the baseline is there before any traffic.
    const p2 = await startProxy(config(dir, 'auto'));
    try {
      const after = await attackOf(p2);
      // Normally read before the restarted proxy's first one-second step; on a slow machine one calm step may come
      // first (with learnSeconds 2 it halves the rate), which is still nothing like starting from zero.
      const stepped = after.learnedSeconds > Math.round(saved.learned);
      expect(after.learnedSeconds - Math.round(saved.learned)).toBeLessThanOrEqual(1);
      expect(after.learnedSeconds).toBeGreaterThanOrEqual(Math.round(saved.learned));
      if (!stepped) expect(after.baselineRps).toBe(Math.round(saved.baselineRps * 10) / 10);
      else expect(after.baselineRps).toBeGreaterThanOrEqual(Math.floor(saved.baselineRps * 5) / 10);
      // /login's usual size survived: 1 MiB bodies there get a new source banned, with no visitor to teach it again.
      const flooder = '127.0.78.2';
      const big = Buffer.alloc(1024 * 1024, 0x61);
      for (let i = 0; i < 12 && !(await listed(p2, flooder)); i++) await hit(p2, '/login', flooder, { method: 'POST', body: big });
      expect(await listed(p2, flooder)).toBe(true);
    } finally {
      await p2.close();
    }

    // Filtering on: a new source is challenged on pages, but /theme, learned as static before the restarts, passes untouched.
    const p3 = await startProxy(config(dir, 'always'));
    try {
      const stranger = '127.0.78.3';
      const page = await hit(p3, '/about', stranger);
      expect(page.status).toBe(302);
      expect(page.headers['x-scrubber']).toBe('challenge');
      expect((await hit(p3, '/theme', stranger)).status).toBe(200);
      expect((await hit(p3, '/theme2', stranger)).status).toBe(302); // never served: nothing learned
    } finally {
      await p3.close();
    }
  });

  it('an attack under way when the proxy stops is still on when it comes back', async () => {
    const dir = tempDir();
    const p1 = await startProxy(config(dir, 'auto'));
    const source = '127.0.78.10';
    try {
      for (let i = 0; i < 10; i++) expect((await hit(p1, '/', source)).status).toBe(200);
      failing = true;
      // The application fails with 503: a sign of attack by itself.
      const started = Date.now();
      while (!(await attackOf(p1)).under && Date.now() - started < 5000) { await hit(p1, '/', `127.0.78.${11 + ((Date.now() / 50) & 15)}`); await sleep(20); }
      expect((await attackOf(p1)).under).toBe(true);
    } finally {
      failing = false;
      await p1.close();
    }
    const p2 = await startProxy(config(dir, 'auto'));
    try {
      const a = await attackOf(p2);
      expect(a.under).toBe(true);
      expect(a.reason).toBe('upstream failing');
      // Attack mode is on from the first request: a new source gets the challenge.
      const r = await hit(p2, '/', '127.0.78.40');
      expect(r.status).toBe(302);
      expect(r.headers['x-scrubber']).toBe('challenge');
    } finally {
      await p2.close();
    }
  });

  it('a damaged record is skipped: the proxy starts and the domain learns again, as on a first start', async () => {
    const dir = tempDir();
    const p1 = await startProxy(config(dir, 'auto'));
    await p1.close();
    const db = openStore(dir);
    db.prepare('INSERT OR REPLACE INTO filter_learned (domain, saved_at, data) VALUES (?, ?, ?)').run(HOST, Date.now(), '{not json');
    db.close();
    const p2 = await startProxy(config(dir, 'auto'));
    try {
      expect(await attackOf(p2)).toMatchObject({ under: false, baselineRps: 0, learnedSeconds: 0 });
      expect((await hit(p2, '/', '127.0.78.50')).status).toBe(200);
    } finally {
      await p2.close();
    }
  });
});
