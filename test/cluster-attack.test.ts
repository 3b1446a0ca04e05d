// A domain's attack state is the cluster's (SPEC §9): a node that starts while
// another node filters a domain filters it from its start, and a worker that
// replaces a dead one filters what the node filters. Real processes: the CLI
// (two workers, then one) on a real redis-server; "another node" is a real
// RedisBus publishing what a node publishes when it finds an attack.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { startOrigin, startWorkersCli, request, sleep, tempDir, type Origin } from './helpers/servers.ts';
import { findRedisServer, redisSkipReason, startRedis, type RedisServer } from './helpers/redis.ts';
import { RedisBus } from '../src/store/redis-bus.ts';
import type { Decision } from '../src/decisions/bus.ts';

const HOST = 'attacked.test';
const hasRedis = findRedisServer() !== null;

type Cli = Awaited<ReturnType<typeof startWorkersCli>>;
const get = async (cli: Cli, p: string) => JSON.parse((await request(`http://127.0.0.1:${cli.admin}${p}`)).body);
const workers = async (cli: Cli) => (await get(cli, '/api/workers')).workers as { index: number; pid: number; ready: boolean; underAttack: string[] }[];
const domainUnder = async (cli: Cli) => ((await get(cli, '/api/domains')).domains as { name: string; underAttack: boolean }[]).find((d) => d.name === HOST)!.underAttack;
async function within(what: string, cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) { if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`); await sleep(50); }
}

describe.skipIf(!hasRedis)('attack state across workers and nodes', () => {
  let redis: RedisServer;
  let origin: Origin;
  let elsewhere: RedisBus;
  const clis: Cli[] = [];
  const start = async (workersCount: number) => {
    const cli = await startWorkersCli(HOST, origin.address, { workers: workersCount, filter: { mode: 'auto' }, state: { dir: path.join(tempDir(), 'data'), redis: { url: redis.url } } });
    clis.push(cli);
    return cli;
  };

  beforeAll(async () => {
    redis = await startRedis();
    origin = await startOrigin();
    elsewhere = new RedisBus({ url: redis.url, nodeId: 'elsewhere' });
  });
  afterAll(async () => {
    for (const c of clis) await c.stop();
    await elsewhere?.close();
    await redis?.close();
    await origin?.close();
  });

  it('a worker replaced after kill -9 filters the domain the node filters; a node started later filters it from its start', async () => {
    const node = await start(2);
    await within('bus up', async () => elsewhere.healthy, 5000);
    expect(await domainUnder(node)).toBe(false);
    elsewhere.publish({ kind: 'attack', domain: HOST, under: true, since: Date.now(), reason: 'rate 9000/s over baseline 40/s' });
    await within('both workers filter', async () => (await workers(node)).every((w) => w.underAttack.includes(HOST)), 5000);

    const [victim] = await workers(node);
    process.kill(victim.pid, 'SIGKILL');
    await within('the worker replaced and reporting', async () => {
      const w = (await workers(node))[victim.index];
      return w.pid !== victim.pid && w.ready;
    }, 8000);
    await sleep(1500); // its first report (one a second) says what it filters
    expect((await workers(node))[victim.index].underAttack).toEqual([HOST]);

    // A node that joins now reads the state from Redis and filters from its start, before any traffic of its own.
    const late = await start(1);
    await within('the late node filters', () => domainUnder(late), 3000);
    const d = ((await get(late, '/api/domains')).domains as { name: string; attack: { reason: string } }[]).find((x) => x.name === HOST)!;
    expect(d.attack.reason).toBe('found elsewhere: rate 9000/s over baseline 40/s');
  }, 40_000);

  it('a node joining takes up an attack state said lately, not one left behind by a node that stopped', async () => {
    const now = Date.now();
    elsewhere.publish({ kind: 'attack', domain: 'fresh.test', under: true, since: now - 600_000, reason: 'rate', at: now - 30_000 });
    // Said last ten minutes ago: the node that said it stopped without saying it was over (kill -9, a crash).
    elsewhere.publish({ kind: 'attack', domain: 'stale.test', under: true, since: now - 900_000, reason: 'rate', at: now - 600_000 });
    await within('written', async () => elsewhere.pendingCount === 0, 3000);
    const cli = await startWorkersCli('fresh.test', origin.address, {
      workers: 1, filter: { mode: 'auto' }, state: { dir: path.join(tempDir(), 'data'), redis: { url: redis.url } },
      domains: [{ name: 'fresh.test', upstreams: [origin.address] }, { name: 'stale.test', upstreams: [origin.address] }],
    });
    clis.push(cli);
    const under = async () => Object.fromEntries(((await get(cli, '/api/domains')).domains as { name: string; underAttack: boolean }[]).map((d) => [d.name, d.underAttack]));
    await within('the fresh state taken up', async () => (await under())['fresh.test'], 3000);
    expect((await under())['stale.test']).toBe(false);
  }, 30_000);

  it('an upstream failing in an attack is told to the other nodes, which tighten their filter for the domain too', async () => {
    const heard: Decision[] = [];
    elsewhere.subscribe((d) => { if (d.kind === 'attack') heard.push(d); });
    const broken = await startOrigin((_q, res) => { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('down'); });
    try {
      const cli = await startWorkersCli('broken.test', broken.address, {
        workers: 2, filter: { mode: 'auto' }, state: { dir: path.join(tempDir(), 'data'), redis: { url: redis.url } },
        domains: [{ name: 'broken.test', upstreams: [broken.address] }, { name: 'told.test', upstreams: [origin.address] }],
      });
      clis.push(cli);
      const attack = async (name: string) => ((await get(cli, '/api/domains')).domains as { name: string; attack: { under: boolean; upstreamFailing: boolean } }[]).find((d) => d.name === name)!.attack;
      // Another node's upstream fails: this one tightens as well.
      elsewhere.publish({ kind: 'attack', domain: 'told.test', under: true, since: Date.now(), reason: 'upstream failing', at: Date.now(), failing: true });
      await within('told.test tightened here', async () => (await attack('told.test')).upstreamFailing, 3000);
      // This node's own upstream fails (every request a 503, 8 a second over both workers): the others hear it.
      const t0 = Date.now();
      for (let n = 0; Date.now() - t0 < 6000 && !heard.some((d) => d.kind === 'attack' && d.domain === 'broken.test' && d.failing); n++) {
        void request(`http://127.0.0.1:${cli.port}/`, { headers: { host: 'broken.test' }, localAddress: `127.0.74.${(n % 16) + 1}` }).catch(() => {});
        await sleep(125);
      }
      expect(heard.find((d) => d.kind === 'attack' && d.domain === 'broken.test')).toMatchObject({ under: true, failing: true });
      expect(await attack('broken.test')).toMatchObject({ under: true, upstreamFailing: true });
    } finally { await broken.close(); }
  }, 30_000);
});

if (!hasRedis) describe('attack state across workers and nodes', () => { it.skip(redisSkipReason, () => {}); });
