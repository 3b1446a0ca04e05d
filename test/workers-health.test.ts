// Upstream health with worker processes is the node's, as in one process: the
// primary holds the one fall/rise state of each upstream, runs the active
// checks (one probe per interval, not one per process), and hears from the
// workers what their requests met; every worker routes by what it decided, and
// /api/domains and /metrics show it. Real processes: the CLI with two workers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import { startWorkersCli, request, rawExchange, sleep } from './helpers/servers.ts';
import { shardOf } from '../src/cluster/protocol.ts';
import fc from 'fast-check';
import { healthPhase, initialHealth, nextHealth, worthReporting, type HealthPhase } from '../src/upstream/health.ts';

const PASSIVE = 'passive.test';
const ACTIVE = 'active.test';

/** An origin counting application requests and /health probes apart; `bad` makes /health answer 500. */
interface Counting { address: string; hits: number; probes: number; bad: boolean; close(): Promise<void> }
async function counting(): Promise<Counting> {
  const o: Counting = { address: '', hits: 0, probes: 0, bad: false, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
  const server = http.createServer((req, res) => {
    if (req.url === '/health') { o.probes++; res.writeHead(o.bad ? 500 : 200); res.end(); return; }
    o.hits++;
    res.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  o.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return o;
}

let cli: Awaited<ReturnType<typeof startWorkersCli>>;
let good: Counting, b1: Counting, b2: Counting;
let resetter: net.Server, resetAddress = '';
let resets = 0;

const get = async (host: string, ip: string) =>
  (await rawExchange(cli.port, `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, { localAddress: ip, timeoutMs: 3000 })).text.slice(9, 12);
const domains = async () => JSON.parse((await request(`http://127.0.0.1:${cli.admin}/api/domains`)).body).domains as { name: string; upstreams: { address: string; healthy: boolean }[] }[];
const healthOf = async (host: string, address: string) => (await domains()).find((d) => d.name === host)!.upstreams.find((u) => u.address === address)!.healthy;
const workers = async () => JSON.parse((await request(`http://127.0.0.1:${cli.admin}/api/workers`)).body).workers as { index: number; pid: number; ready: boolean }[];
/** An address in 127.0.x.y owned by worker `index` (the primary shards by source). */
const sourceOf = (index: number, x: number) => { for (let y = 1; ; y++) { const ip = `127.0.${x}.${y}`; if (shardOf(ip, 2) === index) return ip; } };
async function waitFor(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const t = Date.now();
  while (!(await cond())) { if (Date.now() - t > ms) throw new Error(`${what}: not within ${ms} ms`); await sleep(50); }
}

beforeAll(async () => {
  [good, b1, b2] = await Promise.all([counting(), counting(), counting()]);
  // Takes the connection, then resets it at the request: a failure of a real request (a GET: retried on the next).
  resetter = net.createServer((s) => { resets++; s.on('error', () => {}); s.once('data', () => s.resetAndDestroy()); });
  resetter.listen(0, '127.0.0.1');
  await once(resetter, 'listening');
  resetAddress = `127.0.0.1:${(resetter.address() as net.AddressInfo).port}`;
  cli = await startWorkersCli(PASSIVE, good.address, {
    domains: [
      // Active checks every two minutes (the default): within the test only real requests can tell this one is down.
      { name: PASSIVE, upstreams: [resetAddress, good.address], healthCheck: { type: 'tcp', fall: 2, rise: 2 } },
      { name: ACTIVE, upstreams: [b1.address, b2.address], healthCheck: { type: 'http', path: '/health', intervalMs: 200, timeoutMs: 150, fall: 2, rise: 2 } },
    ],
  });
}, 20_000);

afterAll(async () => {
  await cli?.stop();
  await Promise.all([good?.close(), b1?.close(), b2?.close()]);
  resetter?.close();
});

describe('upstream health with two workers', () => {
  it('failures met by one worker\'s requests take the upstream down for the other worker and on /api/domains', async () => {
    const a = sourceOf(0, 51), b = sourceOf(1, 52);
    expect(await healthOf(PASSIVE, resetAddress)).toBe(true);
    // Worker 0's requests meet the resets (each retried on the good upstream: the client gets its page).
    for (let i = 0; i < 6; i++) expect(await get(PASSIVE, a)).toBe('200');
    expect(resets).toBeGreaterThanOrEqual(2);
    await waitFor(async () => !(await healthOf(PASSIVE, resetAddress)), 1000, 'the primary shows the upstream down');
    // Worker 1 never met a failure: it no longer tries the upstream either.
    const before = resets;
    for (let i = 0; i < 6; i++) expect(await get(PASSIVE, b)).toBe('200');
    expect(resets).toBe(before);
    const metrics = (await request(`http://127.0.0.1:${cli.admin}/metrics`)).body;
    expect(metrics).toMatch(new RegExp(`scrubber_upstreams_healthy\\{domain="${PASSIVE.replace('.', '\\.')}"\\} 1\\b`));
  }, 15_000);

  it('a worker started after the decision (kill -9) starts from it: no request of its sources tries the dead upstream', async () => {
    const [victim] = await workers();
    process.kill(victim.pid, 'SIGKILL');
    await waitFor(async () => { const w = (await workers())[victim.index]; return w.pid !== victim.pid && w.ready; }, 8000, 'the worker replaced');
    const before = resets;
    const ip = sourceOf(victim.index, 53);
    for (let i = 0; i < 6; i++) expect(await get(PASSIVE, ip)).toBe('200');
    expect(resets).toBe(before);
  }, 15_000);

  it('active checks are made once per interval for the node, not once per process', async () => {
    const p0 = b1.probes, t0 = performance.now();
    await sleep(2000);
    const per = (b1.probes - p0) / ((performance.now() - t0) / 200);
    // One prober: about one probe per 200 ms interval (timers slip a little); three processes would make about three.
    expect(per).toBeGreaterThan(0.6);
    expect(per).toBeLessThan(1.5);
  }, 10_000);

  it("the primary's checks take an upstream out of every worker and bring it back", async () => {
    const ips = [sourceOf(0, 54), sourceOf(1, 55)];
    b1.bad = true;
    await waitFor(async () => !(await healthOf(ACTIVE, b1.address)), 2000, 'b1 down');
    const hits = b1.hits;
    for (const ip of ips) for (let i = 0; i < 4; i++) expect(await get(ACTIVE, ip)).toBe('200');
    expect(b1.hits).toBe(hits);
    b1.bad = false;
    await waitFor(async () => await healthOf(ACTIVE, b1.address), 2000, 'b1 up');
    // Round robin over two healthy upstreams again, in each worker.
    await sleep(100);
    for (const ip of ips) { const h = b1.hits; for (let i = 0; i < 4; i++) await get(ACTIVE, ip); expect(b1.hits - h).toBeGreaterThanOrEqual(1); }
  }, 15_000);
});

describe('what a worker tells the primary (pure)', () => {
  const phases: HealthPhase[] = ['ok', 'failing', 'down', 'rising'];
  it('names the four phases of the fall/rise state', () => {
    expect(healthPhase({ healthy: true, failures: 0, successes: 5 })).toBe('ok');
    expect(healthPhase({ healthy: true, failures: 1, successes: 0 })).toBe('failing');
    expect(healthPhase({ healthy: false, failures: 4, successes: 0 })).toBe('down');
    expect(healthPhase({ healthy: false, failures: 0, successes: 1 })).toBe('rising');
  });
  it('only what can change the state: a failure unless down, a success unless ok', () => {
    expect(phases.map((p) => [worthReporting(p, true), worthReporting(p, false)])).toEqual([[false, true], [true, true], [true, false], [true, true]]);
  });
  it('leaving out what it says cannot change the state changes no phase, whatever the reports (generated)', () => {
    // What a worker leaves out, and what one process skips: the phases seen must be those of every report applied.
    fc.assert(fc.property(fc.array(fc.boolean(), { maxLength: 80 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 }), (oks, fall, rise) => {
      let all = initialHealth(), kept = initialHealth();
      for (const ok of oks) {
        all = nextHealth(all, ok, fall, rise);
        if (worthReporting(healthPhase(kept), ok)) kept = nextHealth(kept, ok, fall, rise);
        if (healthPhase(all) !== healthPhase(kept)) return false;
      }
      return true;
    }), { numRuns: 500 });
  });
});
