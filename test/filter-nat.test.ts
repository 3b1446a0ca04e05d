// "A NAT is many people" and "clients that cannot do a cookie round trip", on
// real sockets: a real origin, clients bound to loopback addresses
// (localAddress 127.x.y.z, and ::1). With the filter in `always` mode (every
// untrusted client challenged, every rule enforced):
//   - forty browser users behind one address are all served: each gets its own
//     trust token, the address's caps and rule allowances grow with the people
//     counted, and idle keep-alive connections make room at the connection cap;
//   - at the connection cap, idle keep-alives are closed rather than a new
//     connection refused; busy ones are not, so one client still meets the cap;
//   - one client opening many connections at once, each challenged with its own
//     token, counts as one person once it carries its newest token everywhere;
//   - a trust token survives a move to another address of its network, and
//     between IPv4 and IPv6; copied to many networks it stops being honoured;
//   - cookie-less API clients are served, never sent a 302; flooding, they get
//     429 + Retry-After with a JSON body (and are still banned).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startOrigin, startProxy, domain, sleep, type Origin, type Proxy } from './helpers/servers.ts';

const HOST = 'shop.test';
const PAGE = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0', accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'accept-language': 'en' };
const ASSET = { ...PAGE, accept: 'image/avif,image/webp,*/*;q=0.8' };
const API = { 'user-agent': 'MyShopApp/4.1 (Android 14)', accept: 'application/json' };

let origin: Origin;
let proxy: Proxy;

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    // Some latency, so that forty people have requests in flight together, as on a real origin.
    const delay = path === '/api/slow' ? 400 : 15;
    setTimeout(() => {
      if (path.startsWith('/api/')) { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"ok":true}'); return; }
      if (path.startsWith('/s/')) { res.writeHead(200, { 'content-type': 'image/png' }); res.end('PNG'); return; }
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>page</html>');
    }, delay);
  });
  proxy = await startProxy({
    listen: [{ host: '127.0.0.1', port: 0 }, { host: '::1', port: 0 }],
    filter: { mode: 'always', timeScale: 0.01 },
    domains: [domain(HOST, [origin.address])],
  });
});
afterAll(async () => { await proxy?.close(); await origin?.close(); });

interface Res { status: number; headers: http.IncomingHttpHeaders; body: string; error?: string }
function hit(path: string, o: { agent?: http.Agent; local?: string; headers: Record<string, string>; host?: string; port?: number }): Promise<Res> {
  return new Promise((resolve) => {
    const req = http.request({
      host: o.host ?? '127.0.0.1', port: o.port ?? proxy.port, path, agent: o.agent ?? false, localAddress: o.agent ? undefined : o.local,
      headers: { host: HOST, ...o.headers },
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', (e) => resolve({ status: 0, headers: {}, body, error: e.message }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, headers: {}, body: '', error: (e as NodeJS.ErrnoException).code ?? e.message }));
    req.end();
  });
}

/** A browser: keeps its cookies, follows the challenge, loads a page's assets over up to 4 keep-alive connections. */
class Browser {
  readonly jar = new Map<string, string>();
  readonly statuses: (number | string)[] = [];
  challenges = 0;
  port: number | undefined;
  readonly agent: http.Agent;
  readonly ua: string;
  constructor(local: string, ua = PAGE['user-agent']) { this.agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: local }); this.ua = ua; }
  cookie(): Record<string, string> { return this.jar.size ? { cookie: [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ') } : {}; }
  async get(path: string, headers: Record<string, string>): Promise<Res> {
    for (let hop = 0; ; hop++) {
      const r = await hit(path, { agent: this.agent, port: this.port, headers: { ...headers, 'user-agent': this.ua, ...this.cookie() } });
      for (const c of r.headers['set-cookie'] ?? []) { const [kv] = c.split(';'); const i = kv.indexOf('='); this.jar.set(kv.slice(0, i), kv.slice(i + 1)); }
      if (r.status === 302 && hop < 3) { this.challenges++; path = r.headers.location!; continue; }
      this.statuses.push(r.status || r.error || 'error');
      return r;
    }
  }
  private cached = false;
  /** A page and its four assets (with `cache`, the assets only the first time, as a browser keeps them). */
  async visit(n: number, cache = false): Promise<void> {
    await this.get(`/p/${n}`, PAGE);
    if (cache && this.cached) return;
    this.cached = true;
    await Promise.all([0, 1, 2, 3].map((a) => this.get(cache ? `/s/site-${a}.png` : `/s/${n}-${a}.png`, ASSET)));
  }
}

describe('people behind one NAT address', () => {
  it('forty browser users on one address are all served, each trusted by its own token; none challenged more than once', async () => {
    const nat = '127.0.50.1';
    const users = Array.from({ length: 40 }, () => new Browser(nat));
    let peakConnections = 0;
    const watch = setInterval(() => { peakConnections = Math.max(peakConnections, proxy.app.listeners.connections.count(nat)); }, 5);
    await Promise.all(users.map(async (u, i) => {
      await sleep((i * 53) % 1500); // people arrive spread out
      for (let v = 0; v < 3; v++) { await u.visit(i * 3 + v); await sleep(600 + ((i * 97 + v * 31) % 500)); }
    }));
    clearInterval(watch);
    for (const u of users) u.agent.destroy();
    const all = users.flatMap((u) => u.statuses);
    expect(all.length).toBe(40 * 3 * 5);
    expect(all.filter((s) => s !== 200)).toEqual([]);
    expect(proxy.app.filter.banOf(nat)).toBeUndefined();
    // Nobody met the challenge more than once; enough met it (each with a token of their own) to count the people.
    expect(users.filter((u) => u.challenges > 1)).toEqual([]);
    // People are asked (and counted) until the address is no busier than the people counted: several, here.
    expect(proxy.app.pipeline.detector.shared.behind(nat)).toBeGreaterThanOrEqual(6);
    // 40 people × up to 4 connections: past the configured cap of 64, which the people counted raised.
    expect(peakConnections).toBeGreaterThan(64);
  }, 30_000);

  it('one client opening many connections at once is one person: the tokens it replaced do not count as people', async () => {
    // Each connection's first request is challenged with a token of its own; the client keeps the newest cookie, but
    // requests it sent before that bring the older tokens back (here twice each, interleaved), then all carry the newest.
    const src = '127.0.52.1';
    const conns = Array.from({ length: 8 }, () => new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: src }));
    const tokens: string[] = [];
    for (const agent of conns) {
      const r = await hit('/p/1', { agent, headers: PAGE });
      expect(r.status).toBe(302);
      tokens.push(r.headers['set-cookie']![0].split(';')[0]);
    }
    for (let round = 0; round < 2; round++) {
      for (let c = 0; c < conns.length; c++) expect((await hit('/p/2', { agent: conns[c], headers: { ...PAGE, cookie: tokens[c] } })).status).toBe(200);
    }
    for (const agent of conns) expect((await hit('/p/3', { agent, headers: { ...PAGE, cookie: tokens.at(-1)! } })).status).toBe(200);
    await sleep(1100); // past the counted factor's cache
    expect(proxy.app.pipeline.detector.shared.behind(src)).toBe(1);
    for (const agent of conns) agent.destroy();
  }, 15_000);

  it('a single client flooding from one address still meets the caps and is banned', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8, localAddress: '127.0.51.1' });
    const statuses: (number | string)[] = [];
    const end = Date.now() + 4000;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (Date.now() < end && !proxy.app.filter.banOf('127.0.51.1')) statuses.push((await hit('/api/items', { agent, headers: API })).status);
    }));
    agent.destroy();
    expect(proxy.app.filter.banOf('127.0.51.1')).toBeDefined();
    expect(proxy.app.pipeline.detector.shared.behind('127.0.51.1')).toBe(1);
  }, 10_000);
});

describe('a NAT address with a history when an attack starts (auto mode)', () => {
  let auto: Proxy;
  beforeAll(async () => { auto = await startProxy({ filter: { timeScale: 0.01 }, domains: [domain(HOST, [origin.address])] }); });
  afterAll(async () => { await auto?.close(); });

  it('is not banned for looking like one busy client: its people are asked for cookies of their own, counted, and served', async () => {
    const nat = '127.0.55.1';
    const agents = ['Firefox/140.0', 'Chrome/141.0.0.0 Safari/537.36', 'Version/18.5 Safari/605.1.15', 'Edg/141.0.0.0', 'OPR/120.0.0.0', 'Chrome/140.0.0.0 Mobile Safari/537.36'];
    const users = Array.from({ length: 30 }, (_, i) => { const b = new Browser(nat, `Mozilla/5.0 (X11; Linux x86_64) ${agents[i % agents.length]} u${i % 12}`); b.port = auto.port; return b; });
    let attackAt = 0;
    // Calm at first (auto mode: nothing enforced but what no person does), then an attack starts.
    const attack = setTimeout(() => { attackAt = Date.now(); auto.app.filter.detector.attacks.remoteAttack(HOST, true, Date.now(), 'test'); }, 4000);
    await Promise.all(users.map(async (u, i) => {
      await sleep((i * 53) % 1000);
      for (let v = 0; v < 7; v++) { await u.visit(i * 7 + v, true); await sleep(900 + ((i * 97 + v * 31) % 500)); }
    }));
    clearTimeout(attack);
    for (const u of users) u.agent.destroy();
    expect(attackAt).toBeGreaterThan(0);
    expect(auto.app.filter.attackState(HOST)?.under).toBe(true);
    expect(auto.app.filter.banOf(nat), JSON.stringify(auto.app.filter.banOf(nat))).toBeUndefined();
    expect(users.flatMap((u) => u.statuses).filter((st) => st !== 200)).toEqual([]);
    expect(users.filter((u) => u.challenges > 1)).toEqual([]);
    expect(users.filter((u) => u.challenges === 1).length).toBeGreaterThan(0);
    expect(auto.app.pipeline.detector.shared.behind(nat)).toBeGreaterThan(1);
  }, 30_000);
});

describe('the connection cap', () => {
  let small: Proxy;
  beforeAll(async () => { small = await startProxy({ limits: { maxConnectionsPerSource: 4 }, domains: [domain(HOST, [origin.address])] }); });
  afterAll(async () => { await small?.close(); });

  it('closes a source\'s idle keep-alive connections to admit a new one; busy ones are never closed, so a client busy on all of them is refused', async () => {
    const local = '127.0.52.1';
    const agents = Array.from({ length: 4 }, () => new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: local }));
    for (const a of agents) expect((await hit('/p/1', { agent: a, headers: PAGE, port: small.port })).status).toBe(200);
    expect(small.app.listeners.connections.count(local)).toBe(4); // four idle keep-alives: the cap
    // A fifth connection: served, the longest idle one was closed for it.
    expect((await hit('/p/2', { local, headers: PAGE, port: small.port })).status).toBe(200);
    expect(small.app.listeners.connections.idleClosed).toBe(1);
    for (const a of agents) a.destroy();
    await sleep(50);
    // Four busy connections (slow answers in flight): the fifth is refused, nothing busy is cut.
    const busy = Array.from({ length: 4 }, () => hit('/api/slow', { local, headers: API, port: small.port }));
    await sleep(150);
    const fifth = await hit('/api/items', { local, headers: API, port: small.port });
    expect(fifth.status).toBe(0);
    expect((await Promise.all(busy)).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(small.app.listeners.connections.idleClosed).toBe(1);
  }, 10_000);
});

describe('the trust token', () => {
  async function trusted(local: string): Promise<Browser> {
    const b = new Browser(local);
    expect((await b.get('/p/1', PAGE)).status).toBe(200);
    expect(b.challenges).toBe(1);
    return b;
  }
  const withCookie = (b: Browser, local: string, extra: Partial<Parameters<typeof hit>[1]> = {}) => hit('/p/2', { local, headers: { ...PAGE, ...b.cookie() }, ...extra });

  it('survives a move to another address of the same network, and between IPv4 and IPv6', async () => {
    const b = await trusted('127.0.60.5');
    expect((await withCookie(b, '127.0.60.6')).status).toBe(200);
    const v6 = await withCookie(b, '::1', { host: '::1', port: proxy.app.listeners.addresses()[1].port });
    expect(v6.status).toBe(200);
    expect(v6.headers['x-scrubber']).toBeUndefined();
    b.agent.destroy();
  });

  it('copied to many networks, it stops being honoured (everywhere)', async () => {
    const b = await trusted('127.0.61.1');
    const statuses: number[] = [];
    for (let net = 0; net < 8; net++) statuses.push((await withCookie(b, `127.${62 + net}.0.1`)).status);
    // maxNetworksPerToken (4): its own network and three more; then challenged again.
    expect(statuses).toEqual([200, 200, 200, 302, 302, 302, 302, 302]);
    expect((await withCookie(b, '127.0.61.1')).status).toBe(302);
    b.agent.destroy();
  });

  it('cannot be forged: a made-up token is challenged', async () => {
    const r = await hit('/p/3', { local: '127.0.63.9', headers: { ...PAGE, cookie: 'scrubber_trust=zzzzzz.AAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA' } });
    expect(r.status).toBe(302);
  });
});

describe('clients that cannot do a cookie round trip', () => {
  it('are served without a 302; past the per-source cap they get 429 + Retry-After in JSON, not a page', async () => {
    const local = '127.0.70.1';
    expect((await hit('/api/items', { local, headers: API })).status).toBe(200);
    let small: Proxy | null = null;
    try {
      small = await startProxy({ limits: { maxInflightPerSource: 2 }, domains: [domain(HOST, [origin.address])] });
      const rs = await Promise.all(Array.from({ length: 4 }, () => hit('/api/slow', { local, headers: API, port: small!.port })));
      expect(rs.map((r) => r.status).sort()).toEqual([200, 200, 429, 429]);
      const refused = rs.find((r) => r.status === 429)!;
      expect(refused.headers['retry-after']).toBe('1');
      expect(refused.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(refused.body).error).toBe('too_many_requests');
      // A browser navigation past the same cap still gets the page it can show.
      const pages = await Promise.all(Array.from({ length: 3 }, () => hit('/api/slow', { local: '127.0.70.2', headers: PAGE, port: small!.port })));
      expect(pages.filter((r) => r.status === 503 && /text\/html/.test(String(r.headers['content-type']))).length).toBe(1);
    } finally { await small?.close(); }
  });

  it('flooding, an API client is still banned, and told so with 429 + Retry-After (JSON) instead of a dropped connection', async () => {
    const local = '127.0.71.1';
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: local });
    const seen: Res[] = [];
    const end = Date.now() + 4000;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (Date.now() < end && !proxy.app.filter.banOf(local)) seen.push(await hit('/api/items', { agent, headers: API }));
    }));
    agent.destroy();
    expect(proxy.app.filter.banOf(local)).toBeDefined();
    expect(seen.filter((r) => r.status === 302)).toEqual([]);
    const told = seen.filter((r) => r.status === 429);
    expect(told.length).toBeGreaterThanOrEqual(1);
    expect(Number(told[0].headers['retry-after'])).toBeGreaterThan(1);
    expect(told[0].headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(told[0].body).retryAfter).toBe(Number(told[0].headers['retry-after']));
    // Its next connection is refused at accept: a ban is a ban.
    expect((await hit('/api/items', { local, headers: API })).status).toBe(0);
  }, 10_000);
});
