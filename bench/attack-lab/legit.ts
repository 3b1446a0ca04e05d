// The legitimate population: users on their own addresses (127.1.x.y), each
// behaving like a browser — a page, then the assets it references over a few
// keep-alive connections (cached afterwards), cookies kept and sent back,
// redirects followed (a 302 to the same URL with Set-Cookie is simply
// followed with the cookie, as a browser does), realistic headers, think
// time, navigation, an occasional search and login.
// A logical request (with its redirects) succeeds when it ends in 2xx/3xx
// within 3 s. Per second (of the request's start) it records successes,
// failures and latencies.
// Besides the browser users on their own addresses, a scenario may add
// (each reported as its own group):
//   - natUsers: browser users all behind one address (a corporate NAT);
//   - crowdUsers: a flash crowd of new visitors arriving at crowdFromS over
//     crowdOverS seconds (no history, each on its own address);
//   - apiClients: a mobile app / partner scripts calling JSON endpoints, with
//     no cookie jar and no redirect following (a 3xx is a failure for them).
// The proxy's cookie challenges (3xx with X-Scrubber: challenge) are counted
// per browser user: a visitor should be challenged once at most.
// Child with IPC: node bench/attack-lab/legit.ts '{"port","t0","durationS","users","natUsers","crowdUsers","crowdFromS","crowdOverS","apiClients"}'
//   parent → {cmd:'port', port}: from now on, requests go to that port (a proxy started mid-attack).
import http from 'node:http';
import { bucketOf, at, emptyLegitSecond, legitAddress, pick, rand, sleep, SITE_HOST, USER_AGENTS, API_USER_AGENTS, PAGES, CROWD_BASE, API_BASE, NAT_ADDRESS, type LegitSecond, type LegitReport, type LegitGroup } from './common.ts';

const opts = JSON.parse(process.argv[2]) as { port: number; t0: number; durationS: number; users: number; natUsers?: number; crowdUsers?: number; crowdFromS?: number; crowdOverS?: number; apiClients?: number };
const END = opts.t0 + opts.durationS * 1000;
let port = opts.port;
process.on('message', (m: { cmd: string; port?: number }) => { if (m.cmd === 'port' && m.port) port = m.port; });

function record(group: LegitGroup, started: number, ok: boolean, reason: string): void {
  const s = at(seconds, Math.max(0, bucketOf(opts.t0, started)), emptyLegitSecond);
  s.total++;
  if (ok) s.ok++; else { s.fail++; s.failReasons[reason] = (s.failReasons[reason] ?? 0) + 1; }
  s.lat.push(Date.now() - started);
  const g = ((s.groups ??= {})[group] ??= { total: 0, ok: 0 });
  g.total++;
  if (ok) g.ok++;
}
const TIMEOUT_MS = 3000;
const seconds: LegitSecond[] = [];
const blocked = new Set<string>();
const resets = new Map<string, number>();
let requests = 0;

interface Resp { status: number; headers: http.IncomingHttpHeaders; body: string }
type Kind = 'document' | 'style' | 'script' | 'image' | 'form';

class User {
  addr: string; ua: string; agent: http.Agent;
  group: LegitGroup;
  /** Cookie challenges (3xx with X-Scrubber: challenge) this user got. */
  challenges = 0;
  cookies = new Map<string, string>();
  cache = new Set<string>();
  current = '/';
  /** Page views left on the current connections. */
  visitsLeft: number;
  constructor(i: number, group: LegitGroup = 'browser', addr = legitAddress(i)) {
    this.group = group;
    this.addr = addr;
    this.ua = USER_AGENTS[i % USER_AGENTS.length];
    this.agent = this.newAgent();
    this.visitsLeft = 2 + rand(4);
  }

  // Browsers open up to 6 connections per host; 4 keeps it modest.
  newAgent(): http.Agent { return new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: this.addr, keepAliveMsecs: 1000 }); }

  /** Browsers do not keep connections for ever: servers close idle ones, tabs close, the user comes back later.
   *  Every few page views the user starts over on new connections, so an attack that exhausts the target's
   *  connections (slowloris) locks real users out, as it does in the field. Called between page views only,
   *  when nothing is in flight. */
  maybeReconnect(): void {
    if (--this.visitsLeft > 0) return;
    this.agent.destroy();
    this.agent = this.newAgent();
    this.visitsLeft = 2 + rand(4);
  }

  headers(kind: Kind, referer: string | null, body?: string): http.OutgoingHttpHeaders {
    const h: http.OutgoingHttpHeaders = {
      host: SITE_HOST, 'user-agent': this.ua,
      accept: kind === 'document' || kind === 'form' ? 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8' : kind === 'style' ? 'text/css,*/*;q=0.1' : kind === 'image' ? 'image/avif,image/webp,image/apng,image/*,*/*;q=0.8' : '*/*',
      'accept-language': 'en-US,en;q=0.9', 'accept-encoding': 'gzip, deflate, br',
      'sec-fetch-dest': kind === 'form' ? 'document' : kind, 'sec-fetch-mode': kind === 'document' || kind === 'form' ? 'navigate' : 'no-cors', 'sec-fetch-site': referer ? 'same-origin' : 'none',
    };
    if (kind === 'document' || kind === 'form') h['upgrade-insecure-requests'] = '1';
    if (referer) h.referer = `http://${SITE_HOST}${referer}`;
    if (this.cookies.size) h.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (body !== undefined) { h['content-type'] = 'application/x-www-form-urlencoded'; h['content-length'] = Buffer.byteLength(body); h.origin = `http://${SITE_HOST}`; }
    return h;
  }

  once(method: string, path: string, kind: Kind, referer: string | null, body: string | undefined, signal: { req?: http.ClientRequest }): Promise<Resp> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method, path, agent: this.agent, headers: this.headers(kind, referer, body) }, (res) => {
        if (res.statusCode && res.statusCode >= 300 && res.statusCode < 400 && res.headers['x-scrubber'] === 'challenge') this.challenges++;
        for (const c of res.headers['set-cookie'] ?? []) { const [kv] = c.split(';'); const i = kv.indexOf('='); if (i > 0) this.cookies.set(kv.slice(0, i).trim(), kv.slice(i + 1).trim()); }
        const keep = kind === 'document' || kind === 'form';
        let text = '';
        if (keep) res.setEncoding('utf8');
        res.on('data', (c) => { if (keep) text += c; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        res.on('error', reject);
      });
      signal.req = req;
      req.on('error', reject);
      req.end(body);
    });
  }

  /** One logical request: redirects followed, 3 s budget; recorded in the start second. */
  async fetch(method: string, path: string, kind: Kind, referer: string | null, body?: string): Promise<Resp | null> {
    const started = Date.now();
    const signal: { req?: http.ClientRequest } = {};
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; signal.req?.destroy(new Error('timeout')); }, TIMEOUT_MS);
    let result: Resp | null = null, reason = '';
    try {
      let m = method, p = path, b = body, k = kind;
      for (let hop = 0; ; hop++) {
        requests++;
        const r = await this.once(m, p, k, referer, b, signal);
        if ([301, 302, 303, 307, 308].includes(r.status) && r.headers.location && hop < 5) {
          const next = new URL(r.headers.location, `http://${SITE_HOST}${p}`);
          if (next.host !== SITE_HOST && next.hostname !== '127.0.0.1') { result = r; break; }
          p = next.pathname + next.search;
          if (r.status === 303 || ((r.status === 301 || r.status === 302) && m === 'POST')) { m = 'GET'; b = undefined; k = 'document'; }
          continue;
        }
        if ([301, 302, 303, 307, 308].includes(r.status)) reason = 'redirect-loop';
        result = r;
        break;
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      reason = timedOut ? 'timeout' : code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE' ? 'refused/reset' : 'error ' + (code || (e as Error).message);
      // A single reset can be a keep-alive race; refused or repeated resets are a block.
      if (!timedOut && reason === 'refused/reset') { const n = (resets.get(this.addr) ?? 0) + 1; resets.set(this.addr, n); if (code === 'ECONNREFUSED' || n >= 2) blocked.add(this.addr); }
    } finally { clearTimeout(timer); }
    const elapsed = Date.now() - started;
    if (result && !reason) {
      if (result.status === 403 || result.status === 429) { reason = String(result.status); blocked.add(this.addr); }
      else if (result.status >= 400) reason = result.headers['x-lab-overloaded'] ? 'origin 503' : result.headers['x-scrubber'] ? `proxy ${result.status} ${result.headers['x-scrubber']}` : String(result.status);
    }
    const ok = !reason && elapsed <= TIMEOUT_MS;
    if (!ok && !reason) reason = 'slow';
    record(this.group, started, ok, this.group === 'browser' ? reason : `${this.group}: ${reason}`);
    return ok ? result : null;
  }

  async visit(path: string, referer: string | null, method = 'GET', body?: string): Promise<void> {
    this.maybeReconnect();
    const page = await this.fetch(method, path, method === 'POST' ? 'form' : 'document', referer, body);
    if (!page) return;
    this.current = path.split('?')[0];
    const assets = [...page.body.matchAll(/(?:href|src)="(\/(?:static\/[^"]+|favicon\.ico))"/g)].map((m) => m[1]).filter((a) => !this.cache.has(a));
    await Promise.all(assets.map(async (a) => {
      const kind: Kind = a.endsWith('.css') ? 'style' : a.endsWith('.js') ? 'script' : 'image';
      if (await this.fetch('GET', a, kind, path)) this.cache.add(a);
    }));
  }

  async run(arriveWithinMs = 2000): Promise<void> {
    await sleep(rand(arriveWithinMs)); // users arrive spread out
    let referer: string | null = null;
    while (Date.now() < END - 500) {
      const r = Math.random();
      if (r < 0.08) await this.visit(`/search?q=${encodeURIComponent(pick(['shoes', 'red dress', 'gift', 'sale', 'jacket', 'socks']))}`, referer ?? '/');
      else if (r < 0.12 && !this.cookies.has('sid')) {
        await this.visit('/login', referer);
        await sleep(Math.min(500 + rand(1000), Math.max(0, END - Date.now()))); // typing
        await this.visit('/login', '/login', 'POST', `user=u${this.addr}&password=secret`);
      } else if (r < 0.17) await this.visit(this.current, this.current); // reload
      else await this.visit(pick(PAGES), referer);
      referer = this.current;
      await sleep(Math.min(1000 + rand(2500), END - Date.now())); // think time
    }
  }
}

/** A mobile app or partner script: JSON endpoints, no cookie jar, redirects not followed. */
class ApiClient {
  addr: string; ua: string; agent: http.Agent;
  constructor(i: number) {
    this.addr = legitAddress(API_BASE + i);
    this.ua = API_USER_AGENTS[i % API_USER_AGENTS.length];
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: this.addr });
  }
  call(method: string, path: string, body?: string): Promise<void> {
    const started = Date.now();
    requests++;
    return new Promise((resolve) => {
      let done = false;
      const finish = (ok: boolean, reason: string) => { if (done) return; done = true; clearTimeout(timer); record('api', started, ok && Date.now() - started <= TIMEOUT_MS, ok ? 'api: slow' : `api: ${reason}`); resolve(); };
      const headers: http.OutgoingHttpHeaders = { host: SITE_HOST, 'user-agent': this.ua, accept: 'application/json', 'accept-encoding': 'gzip' };
      if (body !== undefined) { headers['content-type'] = 'application/json'; headers['content-length'] = Buffer.byteLength(body); }
      const req = http.request({ host: '127.0.0.1', port, method, path, agent: this.agent, headers }, (res) => {
        res.resume();
        res.on('end', () => {
          const st = res.statusCode ?? 0;
          if (st === 403 || st === 429) blocked.add(this.addr);
          finish(st >= 200 && st < 300, st >= 300 && st < 400 ? `${st} redirect (no cookie jar)` : res.headers['x-lab-overloaded'] ? 'origin 503' : res.headers['x-scrubber'] ? `proxy ${st} ${res.headers['x-scrubber']}` : String(st));
        });
        res.on('error', () => finish(false, 'error'));
      });
      const timer = setTimeout(() => { req.destroy(); finish(false, 'timeout'); }, TIMEOUT_MS);
      req.on('error', (e: NodeJS.ErrnoException) => finish(false, e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' ? 'refused/reset' : `error ${e.code ?? e.message}`));
      req.end(body);
    });
  }
  async run(): Promise<void> {
    await sleep(rand(1500));
    while (Date.now() < END - 500) {
      const r = Math.random();
      if (r < 0.1) await this.call('GET', `/api/search?q=${pick(['shoes', 'gift', 'sale'])}`);
      else if (r < 0.2) await this.call('POST', '/api/cart', JSON.stringify({ product: 1 + rand(40), qty: 1 }));
      else await this.call('GET', `/api/products/${1 + rand(40)}`);
      await sleep(Math.min(500 + rand(1000), Math.max(0, END - Date.now())));
    }
  }
}

async function main() {
  await sleep(Math.max(0, opts.t0 - Date.now()));
  const users = Array.from({ length: opts.users }, (_, i) => new User(i));
  const nat = Array.from({ length: opts.natUsers ?? 0 }, (_, i) => new User(i, 'nat', NAT_ADDRESS));
  const crowd = Array.from({ length: opts.crowdUsers ?? 0 }, (_, i) => new User(CROWD_BASE + i, 'crowd'));
  const api = Array.from({ length: opts.apiClients ?? 0 }, (_, i) => new ApiClient(i));
  const crowdFrom = opts.t0 + (opts.crowdFromS ?? 0) * 1000;
  await Promise.all([
    ...users.map((u) => u.run()), ...nat.map((u) => u.run()), ...api.map((c) => c.run()),
    ...crowd.map(async (u) => { await sleep(Math.max(0, crowdFrom - Date.now())); await u.run((opts.crowdOverS ?? 3) * 1000); }),
  ]);
  const browsers = [...users, ...nat, ...crowd];
  for (const u of browsers) u.agent.destroy();
  for (const c of api) c.agent.destroy();
  const report: LegitReport = {
    seconds: seconds.map((s) => s ?? emptyLegitSecond()), users: users.length + nat.length + crowd.length + api.length, blockedSources: [...blocked], requests,
    groupUsers: { browser: users.length, nat: nat.length, crowd: crowd.length, api: api.length },
    challengedOnce: browsers.filter((u) => u.challenges === 1).length, challengedMore: browsers.filter((u) => u.challenges > 1).length,
  };
  process.send!({ event: 'report', report }, () => process.exit(0));
}
main().catch((e) => { console.error('legit population failed:', e); process.exit(1); });
