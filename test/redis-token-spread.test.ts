// filter.challenge.maxNetworksPerToken over every node on one Redis: a challenge cookie copied to many machines is
// refused everywhere once it was used from more networks than that, wherever they were seen. Until 2026-11-29 each
// node counted its own: a token seen from two networks on each of two nodes (maxNetworksPerToken 3) was honoured by
// both. Real Redis, real nodes (in-process ones and a CLI node with two worker processes), real clients on 127.x
// addresses (IPv4 networks are /24s). The cases run in order on one Redis and one origin (the first starts them).
import { afterAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startOrigin, startProxy, startWorkersCli, sleep, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { findRedisServer, startRedis, type RedisServer } from './helpers/redis.ts';

const HOST = 'copy.test';
const UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';

function get(port: number, from: string, cookie?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', localAddress: from, agent: false,
      headers: { host: HOST, 'user-agent': UA, accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'accept-language': 'en', ...(cookie ? { cookie } : {}) } }, (res) => {
      res.resume(); res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', () => resolve({ status: 0, headers: {} }));
    req.end();
  });
}
async function within(cond: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!(await cond())) { if (Date.now() > end) return false; await sleep(50); }
  return true;
}
const healthOk = async (adminUrl: string) => JSON.parse(await fetch(`${adminUrl}/healthz`).then((r) => r.text())).status === 'ok';
async function cookieFrom(port: number): Promise<string> {
  const r = await get(port, '127.0.0.77');
  expect(r.status).toBe(302);
  return (r.headers['set-cookie'] ?? [])[0].split(';')[0];
}

describe.skipIf(findRedisServer() === null)('a challenge token\'s spread is counted over the nodes', () => {
  let redis: RedisServer; let origin: Origin;
  const nodes: Proxy[] = [];
  let cli: Awaited<ReturnType<typeof startWorkersCli>> | undefined;
  afterAll(async () => { for (const n of nodes) await n.close(); await cli?.stop(); await redis?.close(); await origin?.close(); });
  const filter = { mode: 'always', challenge: { maxNetworksPerToken: 2 } };

  it('two nodes: used from two networks on one and a third on the other, the token is refused on both', async () => {
    origin = await startOrigin((_q, s) => { s.writeHead(200, { 'content-type': 'text/html' }); s.end('<html>ok</html>'); });
    redis = await startRedis();
    const cfg = () => ({ filter, state: { redis: { url: redis.url } }, domains: [domain(HOST, [origin.address])] });
    const a = await startProxy(cfg()); nodes.push(a);
    const b = await startProxy(cfg()); nodes.push(b);
    expect(await within(async () => (await healthOk(a.adminUrl)) && healthOk(b.adminUrl), 10_000)).toBe(true);
    const cookie = await cookieFrom(a.port);
    // The same secret on both: B honours A's cookie.
    expect((await get(b.port, '127.21.9.5', cookie)).status).toBe(200);
    // That was one network (127.21.9) counted by B; A counts two more: three in all, each node two or fewer.
    expect((await get(a.port, '127.21.1.5', cookie)).status).toBe(200);
    await get(a.port, '127.21.2.5', cookie); // crosses the line (answered before the count comes back)
    expect(await within(async () => (await get(a.port, '127.21.1.5', cookie)).status === 302, 2000)).toBe(true);
    expect(await within(async () => (await get(b.port, '127.21.9.5', cookie)).status === 302, 2000)).toBe(true);
    // A fresh cookie is unaffected.
    const other = await cookieFrom(b.port);
    expect((await get(a.port, '127.21.1.5', other)).status).toBe(200);
  }, 40_000);

  it('a node with workers counts for the node and the cluster: a token over-shared elsewhere is refused by each of its workers', async () => {
    cli = await startWorkersCli(HOST, origin.address, { filter, state: { redis: { url: redis.url } } });
    const a = nodes[0];
    expect(await within(() => healthOk(`http://127.0.0.1:${cli!.admin}`), 10_000)).toBe(true);
    const cookie = await cookieFrom(a.port);
    // Two networks through the CLI node (wherever its workers take them), then one more on A.
    expect((await get(cli.port, '127.22.1.5', cookie)).status).toBe(200);
    expect((await get(cli.port, '127.22.2.5', cookie)).status).toBe(200);
    await get(a.port, '127.22.3.5', cookie);
    // Refused on the CLI node from both networks (the two sources may live in different workers) and on A.
    expect(await within(async () => (await get(cli!.port, '127.22.1.5', cookie)).status === 302 && (await get(cli!.port, '127.22.2.5', cookie)).status === 302, 3000)).toBe(true);
    expect((await get(a.port, '127.22.3.5', cookie)).status).toBe(302);
    // A token over-shared on the workers' node alone (three networks there) is refused on A as well.
    const second = await cookieFrom(a.port);
    for (const net of ['127.23.1.5', '127.23.2.5', '127.23.3.5']) await get(cli.port, net, second);
    expect(await within(async () => (await get(a.port, '127.23.9.5', second)).status === 302, 3000)).toBe(true);
  }, 40_000);

  it('a node stops at once while Redis is frozen (no answer at all): nothing waits for Redis to say goodbye', async () => {
    const c = await startProxy({ filter, state: { redis: { url: redis.url } }, domains: [domain(HOST, [origin.address])] });
    expect(await within(() => healthOk(c.adminUrl), 10_000)).toBe(true);
    process.kill(redis.pid!, 'SIGSTOP');
    try {
      const t0 = performance.now();
      const closed = await Promise.race([c.close().then(() => true), sleep(8000).then(() => false)]);
      expect(closed).toBe(true);
      expect(performance.now() - t0).toBeLessThan(5000);
    } finally { process.kill(redis.pid!, 'SIGCONT'); }
  }, 20_000);

  it('Redis out of reach: each node still refuses a token past its own count, and nothing waits for Redis', async () => {
    const a = nodes[0];
    const cookie = await cookieFrom(a.port);
    await redis.stop();
    const t0 = performance.now();
    for (const from of ['127.24.1.5', '127.24.2.5']) expect((await get(a.port, from, cookie)).status).toBe(200);
    await get(a.port, '127.24.3.5', cookie); // the third network: over this node's own line
    expect((await get(a.port, '127.24.1.5', cookie)).status).toBe(302);
    expect(performance.now() - t0).toBeLessThan(2000);
  }, 20_000);
  it('networks a node saw while Redis was out of reach are counted once it is back: the token is refused everywhere', async () => {
    const [a, b] = nodes;
    await redis.restart();
    expect(await within(async () => (await healthOk(a.adminUrl)) && healthOk(b.adminUrl), 10_000)).toBe(true);
    const cookie = await cookieFrom(a.port);
    await redis.stop();
    // Two networks on A while Redis is down: within A's own line (2).
    for (const from of ['127.25.1.5', '127.25.2.5']) expect((await get(a.port, from, cookie)).status).toBe(200);
    await redis.restart();
    expect(await within(async () => (await healthOk(a.adminUrl)) && healthOk(b.adminUrl), 10_000)).toBe(true);
    expect(await within(() => a.app.sharedTokens?.waiting === 0, 3000)).toBe(true);
    // A third network on B: three in Redis. Before, A's two were never sent, B counted one, and both honoured it.
    await get(b.port, '127.25.3.5', cookie);
    expect(await within(async () => (await get(a.port, '127.25.1.5', cookie)).status === 302, 3000)).toBe(true);
    expect(await within(async () => (await get(b.port, '127.25.3.5', cookie)).status === 302, 3000)).toBe(true);
  }, 40_000);
});
