// What a stop and a store that refuses writes lose: nothing. Each test failed on the code before 2026-11-29 (a
// reviewer's). Real CLI (bin/scrubber.js) as a child process. The first three tests: what the proxy does when
// its store (state.dir/scrubber.db) cannot take a write while it runs, made to refuse writes the way README's "The
// state folder" names ("a locked ... file"): another connection holds SQLite's write lock, as a second process, an
// operator's sqlite3 shell or a backup tool would. The last: statistics of requests cut by a clean stop's drain.
import { afterAll, afterEach, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { once } from 'node:events';
import { DatabaseSync } from 'node:sqlite';
import type { ChildProcess } from 'node:child_process';
import { startOrigin, startCli, freePort, tempDir, request, sleep, until, type Origin } from './helpers/servers.ts';

const HOST = 'dur.test';
const children: ChildProcess[] = [];
const lockers: DatabaseSync[] = [];
let origin: Origin | undefined;
afterEach(async () => {
  for (const l of lockers.splice(0)) { try { l.exec('ROLLBACK'); } catch { /* none open */ } l.close(); }
  for (const c of children.splice(0)) if (c.exitCode === null) { c.kill('SIGKILL'); await once(c, 'exit'); }
});
afterAll(async () => { await origin?.close(); });

/** The CLI (one process) in front of a plain origin; its state.dir in a fresh temp folder. */
async function startProxyCli(extra: Record<string, unknown> = {}) {
  origin ??= await startOrigin();
  const dir = tempDir('scrubber-dur-');
  const port = await freePort(), admin = await freePort();
  const file = path.join(dir, 'c.json');
  const stateDir = path.join(dir, 'data');
  fs.writeFileSync(file, JSON.stringify({
    listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, workers: 1,
    state: { dir: stateDir }, shutdown: { drainTimeoutMs: 500 }, domains: [{ name: HOST, upstreams: [origin.address] }], ...extra,
  }));
  const cli = await startCli(file, { timeoutMs: 20_000 });
  children.push(cli.child);
  return { ...cli, port, admin, stateDir, file };
}

/** Another connection takes the store's write lock and keeps it until the test ends (afterEach lets it go). */
function lockStore(stateDir: string): DatabaseSync {
  const l = new DatabaseSync(path.join(stateDir, 'scrubber.db'));
  lockers.push(l);
  l.exec('BEGIN IMMEDIATE');
  return l;
}

const get = (port: number) => request(`http://127.0.0.1:${port}/x`, { headers: { host: HOST } });

// a store that is locked stalls the whole proxy. Every save attempt waits SQLite's busy_timeout (2 s,
// src/store/db.ts:36) synchronously on the event loop, and the filter's tick retries the save every second while
// anything is queued (src/detect/filter.ts:111, lastFlush is reset before the failing save, so the next tick after a
// 2 s wait tries again at once). With one write queued (here an operator's ban; an expiring ban or an offender record
// does the same) the event loop is blocked nearly all the time: one request to the proxy took 16 s.
// README "The state folder": "A failed save while running (a locked or read-only file) keeps the unsaved bans and list
// changes queued; the next save ... writes them" — a handled, running state, not an outage of the proxy. The statistics
// flush (src/stats/index.ts:83) and the hourly prune (src/stats/index.ts:93) each add their own 2 s stalls.
it('a locked store does not stall the proxy: requests are answered promptly while saves fail', async () => {
  const p = await startProxyCli();
  expect((await get(p.port)).status).toBe(200);
  lockStore(p.stateDir);
  // An operator's ban while the store is locked: in force and answered (README: "in force; saved with the next save").
  const put = await request(`http://127.0.0.1:${p.admin}/api/blacklist/10.6.0.1`, { method: 'PUT', body: '{"ttlSeconds":3600}' });
  expect(put.status).toBe(200);
  const latencies: number[] = [];
  const t0 = Date.now();
  while (Date.now() - t0 < 8000) {
    const s = Date.now();
    expect((await get(p.port)).status).toBe(200);
    latencies.push(Date.now() - s);
    await sleep(50);
  }
  // The saves did fail, and said so (the defect is not that they fail).
  expect(p.logs()).toContain('filter state not saved');
  // On the current code one request takes ~16 s (each step of it, accept, read, connect, answer, waits out a 2 s stall).
  expect(Math.max(...latencies), `latencies (ms): ${latencies.join(', ')}`).toBeLessThan(1000);
}, 60_000);

// while the store refuses writes, /api/stats (and /api/billing) leave out every request counted since the last
// successful save: the flush they do first fails, and they answer from the store's rows alone (src/stats/index.ts:121-127
// buckets(), :128-133 billing()), though the counts are held in memory ("kept in memory, will retry") and are written
// later. The operator sees no traffic, and a smaller bill, for as long as the store is locked or the disk full (seen
// with a full tmpfs as state.dir: 20 requests passed, "buckets": []), then it appears after the fact. The Stats
// interface says buckets() "includes the current, partial one" (src/stats/index.ts:44); /metrics, read from memory,
// shows the same requests meanwhile.
it('while the store refuses writes, /api/stats still shows the requests counted since the last save', async () => {
  const p = await startProxyCli();
  lockStore(p.stateDir);
  for (let i = 0; i < 5; i++) expect((await get(p.port)).status).toBe(200);
  const r = await request(`http://127.0.0.1:${p.admin}/api/stats?domain=${HOST}`);
  expect(r.status).toBe(200);
  const buckets = JSON.parse(r.body).buckets as { incoming: { requests: number }; passed: { requests: number } }[];
  expect(p.logs()).toContain('stats: writing to the store failed');
  expect(buckets.reduce((a, b) => a + b.incoming.requests, 0)).toBe(5);
  expect(buckets.reduce((a, b) => a + b.passed.requests, 0)).toBe(5);
}, 60_000);

// SIGTERM while the store refuses writes loses what was not saved and still reports a clean stop. README
// (SIGTERM / SIGINT): "persist state (bans, lists, statistics), exit 0"; "A failed save while running ... keeps the
// unsaved bans and list changes queued; the next save ... writes them". At a stop there is no next save: close() tries
// once (src/detect/filter.ts:130 save(), src/stats/index.ts:137 flush()), both fail after the 2 s busy wait, the last
// statistics line even says "kept in memory, will retry", then the store is closed (src/app/edge.ts:182) and the process
// exits 0 (src/main.ts:78). An operator's ban answered 200 and the requests counted are gone after the restart, and
// neither the exit status nor an error line says that state was lost: a supervisor or an operator takes it for a
// clean stop. Expected: retry for a bounded time at the stop, and when state is still unsaved, exit non-zero with an
// error line naming what was lost.
it('SIGTERM while the store refuses writes: what could not be persisted is not reported as a clean stop (exit 0)', async () => {
  const p = await startProxyCli();
  const locker = lockStore(p.stateDir);
  // Counted, not saved (the statistics flush fails under the lock).
  for (let i = 0; i < 5; i++) expect((await get(p.port)).status).toBe(200);
  // In force, answered 200, not saved.
  const put = await request(`http://127.0.0.1:${p.admin}/api/blacklist/10.6.0.9`, { method: 'PUT', body: '{"ttlSeconds":3600}' });
  expect(put.status).toBe(200);
  p.child.kill('SIGTERM');
  const [code] = p.child.exitCode !== null ? [p.child.exitCode] : await once(p.child, 'exit');
  locker.exec('ROLLBACK');
  const logs = p.logs();
  const again = await startCli(p.file, { timeoutMs: 20_000 });
  children.push(again.child);
  const banKept = JSON.parse((await request(`http://127.0.0.1:${p.admin}/api/blacklist/10.6.0.9`)).body).listed === true;
  const counted = (JSON.parse((await request(`http://127.0.0.1:${p.admin}/api/stats?domain=${HOST}`)).body).buckets as { incoming: { requests: number } }[])
    .reduce((a, b) => a + b.incoming.requests, 0);
  const persisted = banKept && counted >= 5;
  // On the current code: exit 0, the ban gone, 0 requests counted, the last store line "kept in memory, will retry".
  expect(persisted || code !== 0, `exit ${code}, ban kept ${banKept}, requests counted ${counted}\n${logs.split('\n').filter((l) => /"level":[456]0/.test(l)).join('\n')}`).toBe(true);
}, 90_000);

// a clean stop (SIGTERM) of a single-process proxy loses the requests its drain cut. README (Statistics): counts
// are written "on shutdown, so a clean restart loses nothing"; SIGTERM "let in-flight requests finish for up to
// shutdown.drainTimeoutMs ... persist state (bans, lists, statistics)". Answers still running at the drain deadline
// are cut (src/listen/listeners.ts:301-306); their observation reaches statistics only once the forward settles, a
// little after listeners.close() resolved (in-process: 0 counted right then, all of them a second later). By then
// app.close() has made the last flush (src/app/app.ts:90-96, closeState in src/app/edge.ts:177-178: nothing waits for
// the cut flows to be observed) and the process has exited: they are counted nowhere. With `workers` 2 the same test
// passes (the worker's stop awaits filter.close() and upstreams.close() before its last report, time enough).
it('SIGTERM (one process): requests cut at the drain deadline are still counted after the restart, as with workers', async () => {
  await origin?.close();
  // This test's origin: /hang starts an answer and never ends it.
  origin = await startOrigin((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    if (req.url === '/hang') res.write(Buffer.alloc(1000)); else res.end('ok');
  });
  const p = await startProxyCli({ workers: 1 });
  for (let i = 0; i < 3; i++) expect((await get(p.port)).status).toBe(200);
  const seen = () => origin!.seen.filter((r) => r.url === '/hang').length;
  const hangs = Array.from({ length: 4 }, (_, i) => {
    const r = http.get({ host: '127.0.0.1', port: p.port, path: '/hang', localAddress: `127.0.31.${i + 1}`, headers: { host: HOST } }, (res) => res.resume());
    r.on('error', () => {});
    return r;
  });
  try {
    expect(await until(() => seen() === 4, 10_000)).toBe(true);
    await sleep(200);
    p.child.kill('SIGTERM');
    const [code] = p.child.exitCode !== null ? [p.child.exitCode] : await once(p.child, 'exit');
    expect(code).toBe(0);
  } finally { for (const h of hangs) h.destroy(); }
  const again = await startCli(p.file, { timeoutMs: 20_000 });
  children.push(again.child);
  const buckets = JSON.parse((await request(`http://127.0.0.1:${p.admin}/api/stats?domain=${HOST}`)).body).buckets as { incoming: { requests: number } }[];
  // On the current code: 3 (the four cut requests are counted nowhere).
  expect(buckets.reduce((a, b) => a + b.incoming.requests, 0)).toBe(7);
}, 60_000);
