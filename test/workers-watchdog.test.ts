// A worker whose event loop stops turning (a bug that loops, a process held by
// SIGSTOP) is dead to its sources all the same: every source it owns waits
// behind it, for ever. The primary hears from each worker at least once a
// second (its report); one silent for `workerWatchdogMs` is killed, and the
// pool starts a new one under the same index, as for a worker that died.
// Real processes: the CLI with two workers, one of them stopped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startWorkersCli, request, rawExchange, sleep, type Origin } from './helpers/servers.ts';
import { shardOf } from '../src/cluster/protocol.ts';
import { silentWorkers } from '../src/cluster/watchdog.ts';
import { loadConfigObject } from '../src/config/load.ts';
import { WorkerPool } from '../src/cluster/pool.ts';
import { createLogger } from '../src/log.ts';
import type { WorkerInit } from '../src/cluster/protocol.ts';
import path from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import fs from 'node:fs';

const HOST = 'site.test';
const WATCHDOG_MS = 2000;

let cli: Awaited<ReturnType<typeof startWorkersCli>>;
let origin: Origin;
let port = 0, admin = 0;
const stopped: number[] = [];

const workers = async () => JSON.parse((await request(`http://127.0.0.1:${admin}/api/workers`)).body).workers as { index: number; pid: number; ready: boolean; restarts: number }[];

beforeAll(async () => {
  origin = await startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
  cli = await startWorkersCli(HOST, origin.address, { workerWatchdogMs: WATCHDOG_MS });
  ({ port, admin } = cli);
}, 20_000);

afterAll(async () => {
  for (const pid of stopped) { try { process.kill(pid, 'SIGKILL'); } catch { /* killed by the primary already */ } }
  await cli?.stop();
  await origin?.close();
});

it('a worker that stops answering is killed and replaced; its sources are served again', async () => {
  const ip = '127.0.91.1';
  const before = await workers();
  const owner = before[shardOf(ip, 2)];
  const get = (timeoutMs = 2000) => rawExchange(port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, { localAddress: ip, timeoutMs });
  expect((await get()).text.startsWith('HTTP/1.1 200')).toBe(true);

  process.kill(owner.pid, 'SIGSTOP');
  stopped.push(owner.pid);
  const t0 = Date.now();
  // A new process under the same index, once the stopped one has been silent for the watchdog's time.
  let now = before;
  while (Date.now() - t0 < WATCHDOG_MS + 6000) {
    now = await workers();
    if (now[owner.index].pid !== owner.pid && now[owner.index].ready) break;
    await sleep(100);
  }
  const took = Date.now() - t0;
  expect(now[owner.index].pid).not.toBe(owner.pid);
  expect(now[owner.index].restarts).toBe(owner.restarts + 1);
  // Not before it was silent that long (its last report may have come up to a second before the stop).
  expect(took).toBeGreaterThanOrEqual(WATCHDOG_MS - 1000);
  expect(() => process.kill(owner.pid, 0)).toThrow(); // the stopped process is gone, not left behind
  // The other worker was left alone.
  const other = 1 - owner.index;
  expect(now[other].pid).toBe(before[other].pid);
  expect(cli.logs()).toMatch(/worker unresponsive/);
  // The source is served by the new worker.
  expect((await get()).text.startsWith('HTTP/1.1 200')).toBe(true);
}, 20_000);

it('a worker that is merely busy is not killed', async () => {
  const before = await workers();
  // Keep both workers serving for longer than the watchdog's time: their loops turn, so they report, and stay. (Four
  // clients, one request at a time each: enough to keep them busy, not so much as to starve the suite's other files.)
  const end = Date.now() + WATCHDOG_MS + 1500;
  const loops = Array.from({ length: 4 }, async (_, i) => {
    while (Date.now() < end) await rawExchange(port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, { localAddress: `127.0.92.${i + 1}`, timeoutMs: 2000 });
  });
  await Promise.all(loops);
  const after = await workers();
  expect(after.map((w) => w.pid)).toEqual(before.map((w) => w.pid));
}, 20_000);

it('a primary that stalled itself (held by SIGSTOP) kills no worker when it resumes', async () => {
  const before = await workers();
  // The workers' reports pile up unread in the stopped primary's channels: silence as the watchdog would read it.
  process.kill(cli.child.pid!, 'SIGSTOP');
  try { await sleep(WATCHDOG_MS + 1500); } finally { process.kill(cli.child.pid!, 'SIGCONT'); }
  await sleep(1500);
  const after = await workers();
  expect(after.map((w) => w.pid)).toEqual(before.map((w) => w.pid));
  expect(after.every((w) => w.ready)).toBe(true);
}, 20_000);

describe('which workers are silent (pure)', () => {
  const w = (index: number, heardAt: number, ready = true) => ({ index, heardAt, ready });
  it('a ready worker not heard from for longer than the limit; not one still starting, nor any when the limit is 0', () => {
    const ws = [w(0, 1000), w(1, 9000), null, w(3, 1000, false)];
    expect(silentWorkers(ws, 11_000, 5000)).toEqual([0]);
    expect(silentWorkers(ws, 6000, 5000)).toEqual([]); // exactly the limit is not past it
    expect(silentWorkers(ws, 100_000, 0)).toEqual([]);
  });

  it('none when the one looking stalled itself: the reports of that time are not read yet', () => {
    const ws = [w(0, 1000), w(1, 1000)];
    expect(silentWorkers(ws, 20_000, 5000, 19_500, 500)).toEqual([0, 1]); // looked on time: both silent
    expect(silentWorkers(ws, 20_000, 5000, 8000, 500)).toEqual([]); // the last look was 12 s ago: the primary stalled
  });

  it('workerWatchdogMs: 0 (never) or at least 2000, with units; 10 s by default', () => {
    const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] };
    const load = (v: unknown) => loadConfigObject({ ...ok, workerWatchdogMs: v });
    const r = loadConfigObject(ok);
    expect(r.ok && r.config.workerWatchdogMs).toBe(10_000);
    for (const v of [0, 2000, '30s']) expect(load(v).ok, String(v)).toBe(true);
    const bad = load(1000);
    expect(bad.ok ? [] : bad.problems).toEqual(['workerWatchdogMs: 0 (never) or at least 2000 (was 1000)']);
  });
});

it('a wall clock stepped forward (NTP, an operator) kills no worker: the watchdog keeps time of its own', async () => {
  const real = Date.now;
  let step = 0;
  Date.now = () => real() + step;
  const pool = new WorkerPool({
    entry: path.resolve('test/fixtures/quiet-worker.mjs'), count: 1, log: createLogger('silent'), watchdogMs: 2000,
    init: (index) => ({ index }) as unknown as WorkerInit, onMessage: () => {}, onReport: () => {},
  });
  try {
    await pool.start();
    const before = pool.list()[0];
    step = 60_000; // the wall clock jumps a minute ahead; the worker goes on reporting every second
    await sleep(1500);
    const after = pool.list()[0];
    expect(after.pid).toBe(before.pid);
    expect(after.restarts).toBe(0);
  } finally {
    Date.now = real;
    await pool.stop(500);
  }
}, 15_000);

it('connections refused because too many wait for one worker are counted for the operator (/api/workers) and logged', async () => {
  let logged = '';
  const log = createLogger('silent');
  log.warn = ((o: unknown, msg?: string) => { logged += `${JSON.stringify(o)} ${msg}\n`; }) as typeof log.warn;
  const pool = new WorkerPool({
    entry: path.resolve('test/fixtures/quiet-worker.mjs'), count: 1, log, maxWaiting: 3,
    init: (index) => ({ index }) as unknown as WorkerInit, onMessage: () => {}, onReport: () => {},
  });
  const server = net.createServer({ pauseOnConnect: true }, (socket) => { socket.on('error', () => {}); pool.dispatch(0, '127.0.93.1', socket); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const clients: net.Socket[] = [];
  try {
    await pool.start();
    const worker = pool.list()[0];
    // It takes nothing more: one connection on its way, the rest wait. It stays stopped until it is killed below
    // (SIGKILL ends a stopped process; pool.stop kills it too if the test fails before): let go in between, it
    // would take one of those waiting on its way, and die with it.
    process.kill(worker.pid!, 'SIGSTOP');
    for (let i = 0; i < 10; i++) { const c = net.connect(port, '127.0.0.1'); c.on('error', () => {}); clients.push(c); }
    const deadline0 = Date.now() + 3000;
    while (pool.list()[0].refusedConnections < 6 && Date.now() < deadline0) await sleep(20);
    // One on its way, three waiting (maxWaiting), six refused.
    expect(pool.list()[0].refusedConnections).toBe(6);
    expect(logged).toMatch(/"worker":0.*"refused":\d+.*too many connections wait for this worker/);
    // While the only worker is being replaced, none is ready: the three that waited for it and a new one are refused
    // too, and counted under its index across the restart.
    const old = pool.list()[0].pid!;
    process.kill(old, 'SIGKILL');
    while (pool.list()[0].ready) await sleep(5);
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => {});
    clients.push(c);
    const deadline = Date.now() + 5000;
    while ((pool.list()[0].pid === old || !pool.list()[0].ready) && Date.now() < deadline) await sleep(20);
    expect(pool.list()[0].pid).not.toBe(old);
    expect(pool.list()[0].refusedConnections).toBe(10);
  } finally {
    for (const c of clients) c.destroy();
    server.close();
    await pool.stop(500);
  }
}, 15_000);

it('workerWatchdogMs follows a reload: off, a stopped worker stays; set by SIGHUP, it is replaced', async () => {
  const other = await startWorkersCli(HOST, origin.address, { workerWatchdogMs: 0 });
  let victim = 0;
  try {
    const list = async () => JSON.parse((await request(`http://127.0.0.1:${other.admin}/api/workers`)).body).workers as { pid: number; ready: boolean }[];
    victim = (await list())[0].pid;
    process.kill(victim, 'SIGSTOP');
    await sleep(WATCHDOG_MS + 1500);
    expect((await list())[0].pid).toBe(victim); // off: never judged
    fs.writeFileSync(other.file, JSON.stringify({ ...other.config, workerWatchdogMs: WATCHDOG_MS }));
    other.child.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    while ((await list())[0].pid === victim && Date.now() < deadline) await sleep(100);
    expect((await list())[0].pid).not.toBe(victim);
  } finally {
    try { process.kill(victim, 'SIGKILL'); } catch { /* killed by the primary */ }
    await other.stop();
  }
}, 20_000);

it('a worker whose start cannot be prepared (its init throws) is killed and started again, not left waiting', async () => {
  let failNext = false;
  const pool = new WorkerPool({
    entry: path.resolve('test/fixtures/quiet-worker.mjs'), count: 2, log: createLogger('silent'), watchdogMs: 2000,
    init: (index) => {
      if (failNext && index === 1) { failNext = false; throw new Error('store locked'); }
      return { index } as unknown as WorkerInit;
    },
    onMessage: () => {}, onReport: () => {},
  });
  const seen: number[] = [];
  try {
    await pool.start();
    const first = pool.list()[1];
    seen.push(first.pid!);
    failNext = true;
    process.kill(first.pid!, 'SIGKILL');
    // The replacement's init throws: that child must go, and the one after it start as usual.
    let now = pool.list()[1];
    for (let i = 0; i < 80 && !(now.ready && now.pid !== first.pid); i++) { await sleep(50); now = pool.list()[1]; if (now.pid && !seen.includes(now.pid)) seen.push(now.pid); }
    expect(now.ready).toBe(true);
    expect(now.restarts).toBeGreaterThanOrEqual(2);
    // No child left behind: every earlier one is gone.
    for (const pid of seen.filter((p) => p !== now.pid)) expect(() => process.kill(pid, 0)).toThrow();
  } finally {
    await pool.stop(500);
  }
}, 15_000);

