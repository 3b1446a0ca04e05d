// The multi-process mode's lifecycle (src/cluster/pool.ts, src/app/worker.ts), with the real CLI, real worker
// processes and loopback sockets only. Each test failed on the code before 2026-11-29, for the reason given.
//
// 1. A worker's replacement whose fork fails. Node reports a failed spawn (EMFILE: the primary out of descriptors,
//    as under a connection flood; EAGAIN: a process limit, a cgroup's pids.max) with an 'error' event and never an
//    'exit'. The pool replaces a worker only on 'exit', and the start deadline kills a process that does not exist,
//    so one failed fork leaves that index with no worker for good: its sources go to the next worker for ever, and
//    /api/workers shows it not ready, with no pid, long after the descriptors are back (at the proxy's start the
//    same failure hangs the start for ever). README "Every core": a worker that dies is forked again under the same
//    index; one that cannot start is retried after the back-off "rather than left waiting for ever".
//
// 2. SIGTERM while connections wait in the primary for a busy worker (the pool's own queue: one handover per turn of
//    the worker's loop). 'stop' goes out behind the connection already on its way, and every connection that waited
//    is handed over after it: the stopping worker destroys it. Connections the proxy had accepted, with their
//    request sent, are reset instead of drained (README: SIGTERM stops accepting and lets what is in flight finish).
//    The worker is held stopped (SIGSTOP) to make "busy" last as long as the test needs, as in
//    workers-handover.test.ts.
import { afterEach, expect, it } from 'vitest';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { perTest, rawExchange, request, sleep } from './helpers/servers.ts';
import { shardOf } from '../src/cluster/protocol.ts';

const HOST = 'site.test';
const { cli: startCli, origin: startOrigin } = perTest();
const restore: (() => void)[] = [];
afterEach(() => { for (const f of restore.splice(0)) { try { f(); } catch { /* gone */ } } });

type WorkerRow = { index: number; pid: number | null; ready: boolean; restarts: number };
const workersOf = async (admin: number) => JSON.parse((await request(`http://127.0.0.1:${admin}/api/workers`)).body).workers as WorkerRow[];
const okOrigin = () => startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });

it('a replacement whose fork failed once (primary out of descriptors for a moment) is forked again once they are back', async () => {
  const origin = await okOrigin();
  const cli = await startCli(HOST, origin.address);
  const before = await workersOf(cli.admin);
  const primary = cli.child.pid!;
  const victim = before[0];
  // The primary may open no descriptor more (its soft limit at its lowest free one): the dead worker's channel frees
  // one, and the fork of its replacement needs a pair (the IPC socketpair), so it fails with EMFILE.
  const open = new Set(fs.readdirSync(`/proc/${primary}/fd`).map(Number));
  let lowest = 0;
  while (open.has(lowest)) lowest++;
  const soft = /Max open files\s+(\d+)/.exec(fs.readFileSync(`/proc/${primary}/limits`, 'utf8'))![1];
  execFileSync('prlimit', ['--pid', String(primary), `--nofile=${lowest}:`]);
  restore.push(() => execFileSync('prlimit', ['--pid', String(primary), `--nofile=${soft}:`]));
  process.kill(victim.pid!, 'SIGKILL');
  // The replacement is forked 100 ms after the death (a first quick death): give it the time, then the descriptors back.
  await sleep(1000);
  execFileSync('prlimit', ['--pid', String(primary), `--nofile=${soft}:`]);
  // The back-off is at most 5 s: within 8 s of the descriptors being back, the index has a worker again.
  let now = await workersOf(cli.admin);
  for (const end = Date.now() + 8000; Date.now() < end && !(now[0].ready && now[0].pid !== victim.pid); await sleep(200)) now = await workersOf(cli.admin);
  expect(cli.logs()).toMatch(/spawn .* EMFILE/); // the fork did fail (else this test says nothing)
  expect({ ready: now[0].ready, replaced: now[0].pid !== victim.pid && now[0].pid != null }).toEqual({ ready: true, replaced: true });
}, 30_000);

it('SIGTERM: connections the primary accepted and queued for a busy worker are served in the drain, not reset', async () => {
  const origin = await okOrigin();
  const cli = await startCli(HOST, origin.address, { shutdown: { drainTimeoutMs: 3000 } });
  const ip = '127.0.96.1';
  const owner = (await workersOf(cli.admin))[shardOf(ip, 2)];
  const get = () => rawExchange(cli.port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, { localAddress: ip, timeoutMs: 6000 });
  expect((await get()).text.startsWith('HTTP/1.1 200')).toBe(true);
  // The owner busy: the first connection is on its way to it, the next three wait in the primary.
  process.kill(owner.pid!, 'SIGSTOP');
  restore.push(() => process.kill(owner.pid!, 'SIGCONT'));
  const exchanges = Array.from({ length: 4 }, () => get());
  await sleep(300);
  cli.child.kill('SIGTERM');
  await sleep(200);
  process.kill(owner.pid!, 'SIGCONT');
  const outcomes = (await Promise.all(exchanges)).map((r) => (r.text ? r.text.slice(9, 12) : r.error ?? (r.closed ? 'closed' : 'no answer')));
  // Each was accepted by the proxy with its request sent before the signal: each is answered within the drain time.
  expect(outcomes).toEqual(['200', '200', '200', '200']);
}, 30_000);
