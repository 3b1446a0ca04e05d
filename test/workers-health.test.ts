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
import { Upstreams, RELAY_MS } from '../src/upstream/upstreams.ts';
import { loadConfigObject } from '../src/config/load.ts';
import fc from 'fast-check';
import { changesNothing, initialHealth, nextHealth, OutcomeRuns, outcomesOf, type Health } from '../src/upstream/health.ts';

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
    expect(await healthOf(PASSIVE, resetAddress)).toBe(false); // as the test before left it
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
    // One prober: about one probe per 200 ms interval (timers slip, more on a loaded machine); three processes: three.
    expect(per).toBeGreaterThan(0.3);
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
  const states: Health[] = [
    { healthy: true, failures: 0, successes: 5 }, { healthy: true, failures: 1, successes: 0 },
    { healthy: false, failures: 4, successes: 0 }, { healthy: false, failures: 0, successes: 1 },
  ];
  it('a success while healthy with no failure counted, a failure while down with no success counted: nothing', () => {
    expect(states.map((h) => [changesNothing(h, true), changesNothing(h, false)])).toEqual([[true, false], [false, false], [false, true], [false, false]]);
  });
  it('skipping what changes nothing changes no health, whatever the reports (generated)', () => {
    fc.assert(fc.property(fc.array(fc.boolean(), { maxLength: 80 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 }), (oks, fall, rise) => {
      let all = initialHealth(), kept = initialHealth();
      for (const ok of oks) {
        all = nextHealth(all, ok, fall, rise);
        if (!changesNothing(kept, ok)) kept = nextHealth(kept, ok, fall, rise);
        if (all.healthy !== kept.healthy || (all.healthy ? all.failures !== kept.failures : all.successes !== kept.successes)) return false;
      }
      return true;
    }), { numRuns: 500 });
  });
  it('batches sent at any moments leave the primary\'s health as every outcome one by one would (generated)', () => {
    // The worker hears the primary's word before its next request (the mirror); a batch holds runs of equal outcomes.
    fc.assert(fc.property(fc.array(fc.record({ ok: fc.boolean(), send: fc.boolean() }), { maxLength: 150 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 }), (steps, fall, rise) => {
      let direct = initialHealth(), primary = initialHealth(), mirror = true;
      const batch = new OutcomeRuns();
      for (const s of steps) {
        direct = nextHealth(direct, s.ok, fall, rise);
        batch.add(s.ok, mirror, Math.max(fall, rise));
        if (!s.send) continue;
        const b = batch.take();
        if (b) for (const ok of outcomesOf(b.firstOk, b.runs)) primary = nextHealth(primary, ok, fall, rise);
        if (primary.healthy !== direct.healthy) return false;
        mirror = primary.healthy;
      }
      return true;
    }), { numRuns: 1000 });
  });
  it('an upstream flapping under load costs the primary a batch per RELAY_MS, not a message per request', async () => {
    const r = loadConfigObject({ domains: [{ name: 'flap.test', upstreams: ['127.0.0.1:9'], healthCheck: { fall: 3, rise: 2 } }] }, {});
    if (!r.ok) throw new Error(r.problems.join('; '));
    const sent: { firstOk: boolean; runs: number[] }[] = [];
    const ups = new Upstreams({ relay: (_id, firstOk, runs) => sent.push({ firstOk, runs }) });
    ups.apply(r.config);
    const u = ups.groups.get('flap.test')!.main[0];
    // One failure in three requests, 3000 requests at once: each failure would have been a message of its own.
    for (let i = 0; i < 3000; i++) u.report(i % 3 !== 0);
    await sleep(RELAY_MS + 30);
    await ups.close();
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.length).toBeLessThanOrEqual(Math.ceil(2000 / 256) + 1);
    // Nothing lost: the runs hold every failure (none in a row here) and the successes between them (two each).
    const failures = sent.reduce((n, b) => n + b.runs.filter((_, i) => (i % 2 === 0) !== b.firstOk).reduce((a, x) => a + x, 0), 0);
    expect(failures).toBe(1000);
  });
  it('nearly every request sends nothing: successes on a healthy upstream start no batch', () => {
    const b = new OutcomeRuns();
    for (let i = 0; i < 1000; i++) expect(b.add(true, true, 3)).toBe(false);
    expect(b.take()).toBe(null);
    expect(b.add(false, true, 3)).toBe(true);
    for (let i = 0; i < 10; i++) b.add(false, true, 3);
    b.add(true, true, 3);
    // The successes before count once (a reset), the failures at most max(fall, rise) = 3.
    expect(b.take()).toEqual({ firstOk: true, runs: [1, 3, 1] });
  });
});
