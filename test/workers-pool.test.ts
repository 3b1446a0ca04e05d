// The primary's worker pool (src/cluster/pool.ts) with stand-in workers (test/fixtures/answering-worker.mjs: the
// pool's protocol and nothing else) and real sockets: what happens to a connection on its way to a worker that dies,
// or that cannot take it, and to a worker that never says ready. The counters the primary adds up across a worker's
// replacement (src/cluster/aggregate.ts).
import { afterEach, expect, it } from 'vitest';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { WorkerPool, type PoolDeps } from '../src/cluster/pool.ts';
import { shardOf, type WorkerInit, type WorkerReport } from '../src/cluster/protocol.ts';
import { WorkersView } from '../src/cluster/aggregate.ts';
import { createLogger } from '../src/log.ts';
import type { Filter } from '../src/detect/filter.ts';

const ENTRY = path.resolve('test/fixtures/answering-worker.mjs');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanup: (() => unknown)[] = [];
afterEach(async () => { for (const f of cleanup.splice(0).reverse()) await f(); });

function poolOf(extra: Partial<PoolDeps> = {}) {
  return new WorkerPool({ entry: ENTRY, count: 2, log: createLogger('silent'), init: (index) => ({ index }) as unknown as WorkerInit, onMessage: () => {}, onReport: () => {}, ...extra });
}

/** A pool of two, a listener handing every connection to it, and an address whose connections go to worker 0. */
async function served() {
  const pool = poolOf();
  await pool.start();
  const server = net.createServer({ pauseOnConnect: true }, (s) => { s.on('error', () => {}); pool.dispatch(0, s.remoteAddress!, s); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.push(() => server.close()); // not waited for: it asks the workers for their connections, as the primary's own does not
  cleanup.push(() => { for (const w of pool.list()) try { process.kill(w.pid!, 'SIGCONT'); } catch { /* gone */ } return pool.stop(200); });
  const ip = Array.from({ length: 50 }, (_, i) => `127.0.94.${i + 1}`).find((a) => shardOf(a, 2) === 0)!;
  return { pool, port: (server.address() as net.AddressInfo).port, ip };
}

function client(port: number, ip: string) {
  const c = net.connect({ port, host: '127.0.0.1', localAddress: ip });
  const st = { data: '', closed: false };
  c.on('data', (d) => { st.data += d; });
  c.on('close', () => { st.closed = true; });
  c.on('error', () => {});
  cleanup.push(() => c.destroy());
  return st;
}

async function answered(port: number, ip: string, ms = 2000): Promise<boolean> {
  const st = client(port, ip);
  for (let t = 0; t < ms && !st.closed; t += 20) await sleep(20);
  return st.data.startsWith('HTTP/1.1 200');
}

it('a worker that dies with a connection on its way: the primary closes its copy, the client is not left hanging', async () => {
  const { pool, port, ip } = await served();
  expect(await answered(port, ip)).toBe(true);
  const pid = pool.list()[0].pid!;
  process.kill(pid, 'SIGSTOP'); // it acknowledges nothing more: the next connection stays on its way
  const st = client(port, ip);
  await sleep(300);
  const fds = fs.readdirSync('/proc/self/fd').length;
  process.kill(pid, 'SIGKILL');
  for (let t = 0; t < 2000 && !st.closed; t += 20) await sleep(20);
  expect(st.closed).toBe(true);
  expect(fs.readdirSync('/proc/self/fd').length).toBeLessThan(fds);
  // Its replacement serves the address again.
  for (let t = 0; t < 3000 && !pool.list()[0].ready; t += 20) await sleep(20);
  expect(await answered(port, ip)).toBe(true);
}, 15_000);

it('a connection the worker could not take (out of descriptors): lost alone, the worker is handed the next ones', async () => {
  const { pool, port, ip } = await served();
  expect(await answered(port, ip)).toBe(true);
  const pid = pool.list()[0].pid!;
  // The worker may open no descriptor more: the one passed to it is refused by its kernel, and Node says so (NACK).
  const open = new Set(fs.readdirSync(`/proc/${pid}/fd`).map(Number));
  let lowest = 0;
  while (open.has(lowest)) lowest++;
  const soft = /Max open files\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))![1];
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${lowest}:`]);
  const lost = client(port, ip);
  for (let t = 0; t < 2000 && !lost.closed; t += 20) await sleep(20);
  expect(lost.closed).toBe(true);
  expect(lost.data).toBe('');
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
  expect(await answered(port, ip)).toBe(true);
  expect(pool.list()[0].refusedConnections).toBeGreaterThanOrEqual(1);
}, 15_000);

it('a worker whose channel closed before its exit: its connections go to the next worker meanwhile', async () => {
  const { pool, port, ip } = await served();
  expect(await answered(port, ip)).toBe(true);
  const w = (pool as unknown as { workers: { child: import('node:child_process').ChildProcess }[] }).workers[0];
  w.child.send({ t: 'hang-up' }); // its channel closes now, its exit comes 1.5 s later
  for (let t = 0; t < 1000 && w.child.connected; t += 5) await sleep(5);
  expect(w.child.connected).toBe(false);
  expect(await answered(port, ip, 1000)).toBe(true);
}, 15_000);

it('a worker that never says ready is killed at its start deadline: the start fails instead of waiting for ever', async () => {
  process.env.POOL_TEST_NEVER_READY = '1';
  const pool = poolOf({ startDeadlineMs: 1000 });
  const started = pool.start();
  delete process.env.POOL_TEST_NEVER_READY; // read by the children as they were forked
  cleanup.push(() => pool.stop(200));
  const t0 = performance.now();
  await expect(started).rejects.toThrow(/exited .* before it was ready/);
  expect(performance.now() - t0).toBeLessThan(5000);
}, 10_000);

it('a worker whose "ready" is read only after its start deadline killed it is not taken as ready: the start fails', async () => {
  // The race: the worker says ready just before its deadline, and the primary's loop is busy across both. The loop then
  // runs the deadline first (timers come before I/O), kills the worker, and reads the "ready" that was waiting in the
  // pipe: taken as ready, a killed worker was handed connections, and the start resolved on a worker that was gone.
  const mark = path.join(fs.mkdtempSync('/tmp/pool-ready-'), 'sent');
  process.env.POOL_TEST_READY_DELAY_MS = '150';
  process.env.POOL_TEST_READY_MARK = mark;
  const pool = poolOf({ count: 1, startDeadlineMs: 1000 });
  const started = pool.start();
  delete process.env.POOL_TEST_READY_DELAY_MS;
  delete process.env.POOL_TEST_READY_MARK;
  cleanup.push(() => pool.stop(200));
  const outcome = started.then(() => 'ready', (e: Error) => e.message);
  await sleep(50);
  // Busy from the check phase, past both the worker's ready (~150 ms after its init) and the deadline (1 s).
  await new Promise<void>((r) => setImmediate(() => { const end = performance.now() + 1500; while (performance.now() < end); r(); }));
  expect(await outcome).toMatch(/exited .* before it was ready/);
  // The race happened: the worker had sent "ready" before it was killed (a slow start would make this test say nothing).
  expect(fs.existsSync(mark)).toBe(true);
}, 10_000);

it('a replaced worker\'s counters count whole, even past the value its predecessor reached', () => {
  const primary = { snapshot: () => ({ counters: {}, underAttack: [], blacklistSize: 0 }), decisions: { blacklist: { tally: { refused: 0 } } } } as unknown as Filter;
  const view = new WorkersView(primary);
  const report = (counters: Record<string, number>) => ({ domains: [], globals: [], counters, attack: [], queues: [], requests: 0, memory: { rss: 0, heapUsed: 0 } }) as WorkerReport;
  view.take(0, report({ challenges: 30 }), 100);
  view.take(0, report({ challenges: 35 }), 100);
  view.gone(0);
  // Its replacement (another process) counted 40 before its first report.
  view.take(0, report({ challenges: 40 }), 101);
  expect(view.snapshot().counters.challenges).toBe(75);
});

it("gauges are each live worker's last value, not added up as counters; a dead worker's queues leave the sums at once", () => {
  const primary = { snapshot: () => ({ counters: {}, underAttack: [], blacklistSize: 0 }), decisions: { blacklist: { tally: { refused: 0 } } } } as unknown as Filter;
  const view = new WorkersView(primary);
  const report = (sourcesTracked: number, queues: WorkerReport['queues'] = []) => ({ domains: [], globals: [], counters: { sourcesTracked, sourcesEvicted: 0 }, attack: [], queues, requests: 0, memory: { rss: 0, heapUsed: 0 } }) as WorkerReport;
  view.take(0, report(50, [['a.test', 3, 2, 10]]), 100);
  view.take(1, report(10, [['a.test', 1, 1, 5]]), 200);
  // Worker 0 forgot sources: the node tracks 20 + 10 now, not 50 + 20 + 10.
  view.take(0, report(20, [['a.test', 3, 2, 10]]), 100);
  expect(view.snapshot().counters.sourcesTracked).toBe(30);
  expect(view.queues.get('a.test')).toEqual({ active: 4, queued: 3, limit: 15 });
  view.gone(0);
  // At once, not at the next report of another worker (up to a second later).
  expect(view.queues.get('a.test')).toEqual({ active: 1, queued: 1, limit: 5 });
  expect(view.snapshot().counters.sourcesTracked).toBe(10);
  view.take(0, report(5), 101);
  expect(view.snapshot().counters.sourcesTracked).toBe(15);
});
