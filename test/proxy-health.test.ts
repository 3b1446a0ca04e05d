// Health ("tunnels"), SPEC.md §3: active TCP and HTTP checks mark an upstream
// down after `fall` failures and back after `rise` successes; a down upstream
// gets no traffic; real request failures count; backups in list order when
// every main upstream is down; fail open when everything is down.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import { startProxy, request, freePort, sleep, type Proxy } from './helpers/servers.ts';
import type { Upstream } from '../src/upstream/upstreams.ts';

const INTERVAL = 100;

/** An origin whose /health answer can be switched, counting application requests apart from probes. */
interface Switchable { port: number; address: string; bad: boolean; probes: number; hits: number; server: http.Server; close(): Promise<void>; listen(): Promise<void> }
async function startSwitchable(port = 0): Promise<Switchable> {
  const o: Switchable = {
    port, address: '', bad: false, probes: 0, hits: 0, server: null as unknown as http.Server,
    async listen() {
      o.server = http.createServer((req, res) => {
        if (req.url === '/health') { o.probes++; res.writeHead(o.bad ? 500 : 200); res.end(); return; }
        o.hits++;
        res.end(`ok from ${o.port}`);
      });
      o.server.listen(o.port, '127.0.0.1');
      await once(o.server, 'listening');
      o.port = (o.server.address() as net.AddressInfo).port;
      o.address = `127.0.0.1:${o.port}`;
    },
    close() { o.server.closeAllConnections(); return new Promise((r) => o.server.close(() => r())); },
  };
  await o.listen();
  return o;
}

/** Polls a condition, bounded in time, so a broken checker fails the test instead of hanging it. */
async function waitFor(cond: () => boolean, ms = 2000): Promise<number> {
  const t = performance.now();
  while (!cond()) {
    if (performance.now() - t > ms) throw new Error(`condition not met within ${ms} ms`);
    await sleep(10);
  }
  return performance.now() - t;
}

const hc = (type: 'tcp' | 'http', extra: Record<string, unknown> = {}) =>
  ({ type, path: '/health', intervalMs: INTERVAL, timeoutMs: 200, fall: 2, rise: 2, ...extra });

let proxy: Proxy;
let a: Switchable, b: Switchable, t1: Switchable, t2: Switchable, m: Switchable, c1: Switchable, c2: Switchable, om: Switchable, ob: Switchable;
let resetter: net.Server;
let resets = 0;
let resetAddress: string;
let deadAddress: string;

beforeAll(async () => {
  [a, b, t1, t2, m, c1, c2, om, ob] = await Promise.all(Array.from({ length: 9 }, () => startSwitchable()));
  resetter = net.createServer((s) => { resets++; s.on('error', () => {}); s.once('data', () => s.resetAndDestroy()); });
  resetter.listen(0, '127.0.0.1');
  await once(resetter, 'listening');
  resetAddress = `127.0.0.1:${(resetter.address() as net.AddressInfo).port}`;
  deadAddress = `127.0.0.1:${await freePort()}`;
  const other = await startSwitchable();
  proxy = await startProxy({
    upstream: { connectTimeoutMs: 300 },
    domains: [
      { name: 'hc-http.test', upstreams: [a.address, b.address], healthCheck: hc('http') },
      { name: 'hc-tcp.test', upstreams: [t1.address, t2.address], healthCheck: hc('tcp') },
      // No active checks in this one: only real requests feed the health state.
      { name: 'hc-real.test', upstreams: [resetAddress, other.address], healthCheck: hc('tcp', { intervalMs: 600000 }) },
      { name: 'hc-backup.test', upstreams: [m.address], backup: [c1.address, c2.address], healthCheck: hc('http') },
      { name: 'hc-open.test', upstreams: [om.address], backup: [ob.address], healthCheck: hc('http') },
      { name: 'hc-dead.test', upstreams: [deadAddress], healthCheck: hc('tcp') },
    ],
  });
});
afterAll(async () => {
  await proxy.close();
  await Promise.all([a, b, t1, t2, m, c1, c2, om, ob].map((o) => o.close().catch(() => {})));
  resetter.close();
});

const upstreamOf = (dom: string, address: string): Upstream => {
  const g = proxy.app.upstreams.groups.get(dom)!;
  return g.all().find((u) => u.address === address)!;
};
const get = (host: string) => request(proxy.url + '/', { headers: { host } });
async function spread(host: string, n: number, origins: Switchable[]): Promise<number[]> {
  const before = origins.map((o) => o.hits);
  for (let i = 0; i < n; i++) expect((await get(host)).status).toBe(200);
  return origins.map((o, i) => o.hits - before[i]);
}

describe('active HTTP checks', () => {
  it('a failing /health takes the upstream out after `fall` probes, and it gets no traffic', async () => {
    const A = upstreamOf('hc-http.test', a.address);
    expect(A.healthy).toBe(true);
    expect(await spread('hc-http.test', 10, [a, b])).toEqual([5, 5]);
    a.bad = true;
    const probesBefore = a.probes;
    await waitFor(() => !A.healthy);
    // Not on the first failed probe: fall is 2.
    expect(a.probes - probesBefore).toBeGreaterThanOrEqual(2);
    // The application itself still answers; only the check says no. No request goes there.
    expect(await spread('hc-http.test', 10, [a, b])).toEqual([0, 10]);
  });

  it('comes back after `rise` good probes and shares the load again', async () => {
    const A = upstreamOf('hc-http.test', a.address);
    a.bad = false;
    const probesBefore = a.probes;
    await waitFor(() => A.healthy);
    expect(a.probes - probesBefore).toBeGreaterThanOrEqual(2);
    expect(await spread('hc-http.test', 10, [a, b])).toEqual([5, 5]);
  });
});

describe('active TCP checks', () => {
  it('an upstream that stops listening is marked down, and back up once it listens again', async () => {
    const T1 = upstreamOf('hc-tcp.test', t1.address);
    await t1.close();
    await waitFor(() => !T1.healthy);
    expect(await spread('hc-tcp.test', 6, [t1, t2])).toEqual([0, 6]);
    await t1.listen(); // same port
    await waitFor(() => T1.healthy);
    expect(await spread('hc-tcp.test', 6, [t1, t2])).toEqual([3, 3]);
  });
});

describe('real request failures', () => {
  it('count toward fall: after two failed requests the upstream gets no more attempts', async () => {
    const R = upstreamOf('hc-real.test', resetAddress);
    const before = resets;
    for (let i = 0; i < 10; i++) expect((await get('hc-real.test')).status).toBe(200);
    // Round robin leads with the resetter on requests 1 and 3; after the second reset it is down.
    expect(resets - before).toBe(2);
    expect(R.healthy).toBe(false);
  });
});

describe('backup upstreams', () => {
  it('take the traffic in list order when every main upstream is down', async () => {
    m.bad = true;
    await waitFor(() => !upstreamOf('hc-backup.test', m.address).healthy);
    expect(await spread('hc-backup.test', 6, [m, c1, c2])).toEqual([0, 6, 0]);

    c1.bad = true;
    await waitFor(() => !upstreamOf('hc-backup.test', c1.address).healthy);
    expect(await spread('hc-backup.test', 4, [m, c1, c2])).toEqual([0, 0, 4]);

    c1.bad = false;
    await waitFor(() => upstreamOf('hc-backup.test', c1.address).healthy);
    expect(await spread('hc-backup.test', 4, [m, c1, c2])).toEqual([0, 4, 0]);

    m.bad = false;
    await waitFor(() => upstreamOf('hc-backup.test', m.address).healthy);
    expect(await spread('hc-backup.test', 4, [m, c1, c2])).toEqual([4, 0, 0]);
  });
});

describe('fail open', () => {
  it('when every upstream is down they are still tried: a working one still answers', async () => {
    om.bad = true;
    ob.bad = true;
    await waitFor(() => !upstreamOf('hc-open.test', om.address).healthy && !upstreamOf('hc-open.test', ob.address).healthy);
    expect(await spread('hc-open.test', 4, [om, ob])).toEqual([4, 0]);
  });

  it('and only when none answers is it a 502', async () => {
    await waitFor(() => !upstreamOf('hc-dead.test', deadAddress).healthy);
    const r = await get('hc-dead.test');
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBe('connect-refused');
  });
});
