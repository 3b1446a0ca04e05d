// The challenge secret is shared by every node on one Redis (SPEC §9): a browser that passed the challenge on one node
// passes on all. Until 2026-11-28, a node that started while Redis was down kept its own secret for its whole life, even
// once Redis was back (review r1): a browser that passed on another node was challenged again on it. Now the node
// takes up the shared secret when it reaches Redis (its workers too), and the cookies it signed with its own until
// then still pass on it for the trust time.
import { afterAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startOrigin, startProxy, startWorkersCli, sleep, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { findRedisServer, startRedis, type RedisServer } from './helpers/redis.ts';
import { relay } from './helpers/relay.ts';
import { RedisBus } from '../src/store/redis-bus.ts';
import { shardOf } from '../src/cluster/protocol.ts';
import { createSecretKey, randomBytes } from 'node:crypto';
import { CookieChallenge } from '../src/challenge/cookie.ts';
import type { RequestHead } from '../src/http/head.ts';

const HOST = 'shop.test';
const UA = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15';

function get(port: number, cookie?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', localAddress: '127.0.0.77', agent: false,
      headers: { host: HOST, 'user-agent': UA, accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'accept-language': 'en', ...(cookie ? { cookie } : {}) } }, (res) => {
      res.resume(); res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', () => resolve({ status: 0, headers: {} }));
    req.end();
  });
}
async function within(cond: () => Promise<boolean> | boolean, ms: number) {
  const end = Date.now() + ms;
  while (!(await cond())) { if (Date.now() > end) throw new Error(`not within ${ms} ms`); await sleep(50); }
}
/** A challenge answered by the node on `port`: its cookie (name=value). */
async function cookieFrom(port: number): Promise<string> {
  const r = await get(port);
  expect(r.status).toBe(302);
  return (r.headers['set-cookie'] ?? [])[0].split(';')[0];
}
const healthOk = async (adminUrl: string) => JSON.parse(await fetch(`${adminUrl}/healthz`).then((r) => r.text())).status === 'ok';

describe.skipIf(findRedisServer() === null)('challenge secret of a node started while Redis was down', () => {
  let redis: RedisServer; let origin: Origin; let a: Proxy; let b: Proxy; let c: Proxy | undefined; let elsewhere: RedisBus;
  let cli: Awaited<ReturnType<typeof startWorkersCli>> | undefined;
  const stopAll = async () => {
    for (const p of [a, b, c]) await p?.close();
    await cli?.stop(); await elsewhere?.close(); await redis?.close(); await origin?.close();
    a = b = c = cli = elsewhere = redis = origin = undefined as never;
  };
  afterAll(stopAll);
  const attack = async (...nodes: Proxy[]) => {
    elsewhere.publish({ kind: 'attack', domain: HOST, under: true, since: Date.now(), reason: 'test', at: Date.now() });
    await within(() => nodes.every((n) => n.app.filter.attackState(HOST)?.under === true), 5000);
  };
  const begin = async () => {
    await stopAll();
    origin = await startOrigin((_q, s) => { s.writeHead(200, { 'content-type': 'text/html' }); s.end('<html>ok</html>'); });
    redis = await startRedis();
  };
  const cfg = () => ({ filter: { mode: 'auto' }, state: { redis: { url: redis.url } }, domains: [domain(HOST, [origin.address])] });

  for (const late of [false, true]) it(`a cookie issued by node A passes on node B (B started with Redis ${late ? 'down, then Redis back' : 'up: control'})`, async () => {
    await begin();
    if (late) await redis.stop();
    b = await startProxy(cfg()); // Redis down: B signs with its own secret (after waitMs)
    let own = '';
    if (late) {
      // Someone passes on B before Redis is back: B's own secret signed the cookie.
      b.app.filter.detector.attacks.remoteAttack(HOST, true, Date.now(), 'test');
      own = await cookieFrom(b.port);
      expect((await get(b.port, own)).status).toBe(200);
      await redis.restart();
    }
    a = await startProxy(cfg()); // Redis up: A reads (or sets) the shared secret
    elsewhere = new RedisBus({ url: redis.url, nodeId: 'elsewhere' });
    await within(() => elsewhere.healthy, 5000);
    await within(() => healthOk(b.adminUrl), 10_000);
    await attack(a, b);

    const cookie = await cookieFrom(a.port);
    expect((await get(a.port, cookie)).status).toBe(200); // A accepts its own cookie
    const onB = await get(b.port, cookie);
    expect(onB.status, `B answered ${onB.status} ${onB.headers['x-scrubber'] ?? ''}`).toBe(200);
    if (late) {
      // Who passed on B before it took up the shared secret is not challenged again there; B's new cookies pass on A.
      expect((await get(b.port, own)).status).toBe(200);
      const fresh = await cookieFrom(b.port);
      expect((await get(a.port, fresh)).status).toBe(200);
    }
  }, 30_000);

  it('with workers: a node started while Redis was down takes up the shared secret in every worker', async () => {
    await begin();
    await redis.stop();
    cli = await startWorkersCli(HOST, origin.address, { filter: { mode: 'auto' }, state: { redis: { url: redis.url } } });
    await redis.restart();
    a = await startProxy(cfg());
    elsewhere = new RedisBus({ url: redis.url, nodeId: 'elsewhere' });
    await within(() => elsewhere.healthy, 5000);
    await within(() => healthOk(`http://127.0.0.1:${cli!.admin}`), 10_000);
    elsewhere.publish({ kind: 'attack', domain: HOST, under: true, since: Date.now(), reason: 'test', at: Date.now() });
    await within(async () => a.app.filter.attackState(HOST)?.under === true && (await get(cli!.port)).status === 302, 5000);
    const cookie = await cookieFrom(a.port);
    // From several client addresses of one network (one client's, as far as maxNetworksPerToken goes, counted for the
    // whole node): each goes to the worker owning it.
    expect(new Set([1, 2, 3, 4, 5, 6].map((i) => shardOf(`127.0.1.${i}`, 2))).size).toBe(2);
    for (let i = 1; i <= 6; i++) {
      const r = await new Promise<number>((resolve) => {
        const req = http.request({ host: '127.0.0.1', port: cli!.port, path: '/', localAddress: `127.0.1.${i}`, agent: false,
          headers: { host: HOST, 'user-agent': UA, accept: 'text/html,*/*;q=0.8', 'accept-language': 'en', cookie } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
        req.on('error', () => resolve(0));
        req.end();
      });
      expect(r, `client 127.0.1.${i}`).toBe(200);
    }
  }, 40_000);

  it('with workers: a worker replaced after the node took up the shared secret still honours the cookies the node signed before', async () => {
    await begin();
    const link = await relay(redis.port);
    try {
      a = await startProxy({ ...cfg(), filter: { mode: 'always' } }); // its secret is the shared one
      await within(() => healthOk(a.adminUrl), 10_000);
      await link.cut();
      cli = await startWorkersCli(HOST, origin.address, { filter: { mode: 'always' }, state: { redis: { url: link.url } } });
      const own = await cookieFrom(cli.port); // Redis out of reach: signed with the node's own secret
      expect((await get(cli.port, own)).status).toBe(200);
      await link.heal();
      await within(async () => (await get(a.port, await cookieFrom(cli!.port))).status === 200, 10_000); // took up the shared one
      const admin = `http://127.0.0.1:${cli.admin}`;
      const owner = shardOf('127.0.0.77', 2);
      const list = async () => (JSON.parse(await fetch(`${admin}/api/workers`).then((r) => r.text())).workers as { index: number; pid: number; ready: boolean }[]);
      const victim = (await list())[owner];
      process.kill(victim.pid, 'SIGKILL');
      await within(async () => { const w = (await list())[owner]; return w.pid !== victim.pid && w.ready; }, 10_000);
      expect((await get(cli.port, own)).status).toBe(200);
    } finally { await link.close(); }
  }, 40_000);

  it('a node started just after Redis came back empty ends with the same secret as the others', async () => {
    await begin();
    // A and B reach Redis through a relay: cut while Redis restarts empty and a node (C) starts and sets its secret
    // first (SET NX), they come back to a Redis that already holds one that is not theirs.
    const link = await relay(redis.port);
    try {
      const viaLink = () => ({ ...cfg(), state: { redis: { url: link.url } } });
      a = await startProxy(viaLink());
      b = await startProxy(viaLink());
      await within(async () => await healthOk(a.adminUrl) && await healthOk(b.adminUrl), 10_000);
      await link.cut();
      await within(async () => !(await healthOk(a.adminUrl)) && !(await healthOk(b.adminUrl)), 5000);
      await redis.restart(); // empty: no secret, no epoch
      c = await startProxy(cfg());
      await link.heal();
      elsewhere = new RedisBus({ url: redis.url, nodeId: 'elsewhere' });
      await within(async () => elsewhere.healthy && await healthOk(a.adminUrl) && await healthOk(b.adminUrl), 10_000);
      await attack(a, b, c);
      const nodes = { a, b, c };
      for (const [from, p] of Object.entries(nodes)) {
        const cookie = await cookieFrom(p.port);
        for (const [on, q] of Object.entries(nodes)) expect((await get(q.port, cookie)).status, `a cookie of ${from} on ${on}`).toBe(200);
      }
    } finally { await link.close(); }
  }, 40_000);
});

describe('the changeover of the challenge secret (pure: time passed in)', () => {
  const head = (cookie: string): RequestHead => ({ method: 'GET', version: '1.1', url: '/', rawHeaders: [], headers: { cookie }, authority: HOST, source: '10.0.0.1', client: '10.0.0.1', tls: false, newConnection: false, headBytes: 0 });
  const cookieOf = (a: { headers: Record<string, string> }) => a.headers['set-cookie'].split(';')[0];
  it('a cookie signed with the previous secret passes for the grace time, then no more; new ones are signed with the new', () => {
    const t0 = 1_800_000_000_000, trust = 3_600_000;
    const ch = new CookieChallenge(createSecretKey(randomBytes(32)), 'sc');
    const old = cookieOf(ch.issue(head(''), HOST, t0, trust * 2) as never);
    expect(ch.client(head(old), HOST, t0 + 1)).not.toBeNull(); // cached as verified
    ch.setSecret(createSecretKey(randomBytes(32)), t0 + 1000, trust);
    const fresh = cookieOf(ch.issue(head(''), HOST, t0 + 1000, trust) as never);
    expect(ch.client(head(old), HOST, t0 + 2000)).not.toBeNull();
    expect(ch.client(head(fresh), HOST, t0 + 2000)).not.toBeNull();
    expect(ch.client(head(old), HOST, t0 + 1000 + trust)).toBeNull(); // the grace is over: the cache forgot it too
    expect(ch.client(head(fresh), HOST, t0 + 1000 + trust - 1)).not.toBeNull();
  });

  // Changed twice within the grace (a node that took up the shared secret, then Redis lost it): the first secret is
  // out, and a cookie it signed passed on only while the verified cache held it (failed on the code before 2026-11-29).
  it('a cookie of a secret two changes back is refused, cached or not', () => {
    const t0 = 1_800_000_000_000, trust = 3_600_000;
    const ch = new CookieChallenge(createSecretKey(randomBytes(32)), 'sc');
    const first = cookieOf(ch.issue(head(''), HOST, t0, trust * 2) as never);
    expect(ch.client(head(first), HOST, t0 + 1)).not.toBeNull(); // cached as verified
    ch.setSecret(createSecretKey(randomBytes(32)), t0 + 1000, trust);
    ch.setSecret(createSecretKey(randomBytes(32)), t0 + 2000, trust);
    expect(ch.client(head(first), HOST, t0 + 3000)).toBeNull();
  });
});

