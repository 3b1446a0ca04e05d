// Round robin, SPEC.md §3: up to 16 upstreams per domain share the requests
// evenly; a 17th is a config error; an upstream that is down does not skew the
// share of the others.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { loadConfigObject } from '../src/config/load.ts';
import { startOrigin, startProxy, request, freePort, domain, type Origin, type Proxy } from './helpers/servers.ts';

let origins: Origin[];
let proxy: Proxy;
let dead: string;

beforeAll(async () => {
  origins = await Promise.all(Array.from({ length: 16 }, () => startOrigin()));
  dead = `127.0.0.1:${await freePort()}`;
  proxy = await startProxy({
    upstream: { connectTimeoutMs: 300 },
    domains: [
      domain('sixteen.test', origins.map((o) => o.address)),
      domain('pair.test', [origins[0].address, origins[1].address]),
      // One of four never answers; with fall 1 it is down after its first failure.
      domain('one-dead.test', [origins[2].address, origins[3].address, origins[4].address, dead], {
        healthCheck: { type: 'tcp', intervalMs: 600000, timeoutMs: 500, fall: 1, rise: 2 },
      }),
    ],
  });
});
afterAll(async () => { await proxy.close(); await Promise.all(origins.map((o) => o.close())); });

const counts = () => origins.map((o) => o.seen.length);
const diff = (a: number[], b: number[]) => a.map((x, i) => x - b[i]);

describe('round robin', () => {
  it('16 upstreams get an even share of the requests, in turn', async () => {
    const before = counts();
    const order: string[] = [];
    for (let i = 0; i < 64; i++) {
      const r = await request(proxy.url + '/', { headers: { host: 'sixteen.test' } });
      expect(r.status).toBe(200);
      order.push(r.body);
    }
    expect(diff(counts(), before)).toEqual(Array(16).fill(4));
    // In turn: the first 16 answers come from 16 different upstreams.
    expect(new Set(order.slice(0, 16)).size).toBe(16);
  });

  it('requests on one keep-alive client connection are spread too, not pinned', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = counts();
      for (let i = 0; i < 10; i++) expect((await request(proxy.url + '/', { agent, headers: { host: 'pair.test' } })).status).toBe(200);
      const d = diff(counts(), before);
      expect([d[0], d[1]]).toEqual([5, 5]);
    } finally { agent.destroy(); }
  });

  it('with one upstream down, the others share evenly (no neighbour gets its turns)', async () => {
    const g = proxy.app.upstreams.groups.get('one-dead.test')!;
    // The first request that lands on the dead one marks it down and fails over.
    for (let i = 0; i < 4; i++) expect((await request(proxy.url + '/', { headers: { host: 'one-dead.test' } })).status).toBe(200);
    expect(g.main[3].healthy).toBe(false);
    const before = counts();
    for (let i = 0; i < 30; i++) expect((await request(proxy.url + '/', { headers: { host: 'one-dead.test' } })).status).toBe(200);
    expect(diff(counts(), before).slice(2, 5)).toEqual([10, 10, 10]);
  });
});

describe('upstream count', () => {
  const cfg = (n: number) => ({ domains: [{ name: 'many.test', upstreams: Array.from({ length: n }, (_, i) => `127.0.0.1:${20000 + i}`) }] });

  it('16 upstreams is a valid config', () => {
    expect(loadConfigObject(cfg(16), {}).ok).toBe(true);
  });

  it('17 is a config error naming the key', () => {
    const r = loadConfigObject(cfg(17), {});
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.join('\n')).toMatch(/upstreams/);
  });
});
