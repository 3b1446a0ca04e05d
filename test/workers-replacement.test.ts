// What a replaced worker (kill -9, a crash) starts from and what the others
// do for it, with the real CLI, two worker processes and loopback clients.
// Both failed on the code before 2026-11-29:
//
// 1. The per-source connection cap across the replacement. While a source's
//    worker is replaced its connections go to the next worker, which counts
//    them in its own table; the replacement counts the source's new ones from
//    zero, so the source could hold twice the cap ("a cap of 64 connections
//    means 64 in all"). Now the replacement's "ready" tells the others to let
//    go of what they took: closed at once when nothing is answered on them
//    (idle, or a head still coming), else once their answer is out.
// 2. A challenge token the node revoked (used from more than
//    maxNetworksPerToken networks) was not in what a replacement starts from:
//    the new worker honoured it again.
import { afterEach, expect, it } from 'vitest';
import net from 'node:net';
import { perTest, request, sleep, browserPage } from './helpers/servers.ts';
import { shardOf } from '../src/cluster/protocol.ts';

const HOST = 'site.test';
const { cli: startCli, origin: startOrigin } = perTest();
const opened: net.Socket[] = [];
afterEach(() => { for (const s of opened.splice(0)) s.destroy(); });

type WorkerRow = { index: number; pid: number; ready: boolean; restarts: number; requests: number };
const apiOf = (admin: number) => async (method: string, p: string, body?: unknown) => {
  const r = await request(`http://127.0.0.1:${admin}${p}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  let json: any = null;
  try { json = JSON.parse(r.body); } catch { /* text */ }
  return { status: r.status, json, text: r.body };
};
const okOrigin = () => startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });

/** A connection from `local` holding a request head still coming (busy: never closed to make room at the cap). */
function busy(port: number, local: string, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host, localAddress: local });
    opened.push(s);
    s.on('error', () => {});
    s.on('connect', () => { s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`); resolve(s); });
    s.on('close', () => resolve(s));
  });
}

async function untilWorkers(admin: number, cond: (w: WorkerRow[]) => boolean, ms: number): Promise<WorkerRow[]> {
  const api = apiOf(admin);
  const end = Date.now() + ms;
  let w = (await api('GET', '/api/workers')).json.workers as WorkerRow[];
  while (!cond(w) && Date.now() < end) { await sleep(20); w = (await api('GET', '/api/workers')).json.workers as WorkerRow[]; }
  return w;
}

it('per-source connection cap: 4 in all, also across the replacement of the source\'s worker', async () => {
  const origin = await okOrigin();
  const cli = await startCli(HOST, origin.address, { limits: { maxConnectionsPerSource: 4 } });
  const ip = '127.0.97.1';
  const home = shardOf(ip, 2);
  const before = await untilWorkers(cli.admin, () => true, 0);
  process.kill(before[home].pid, 'SIGKILL');
  // The primary saw it go: its sources go to the other worker while it is replaced.
  await untilWorkers(cli.admin, (w) => !w[home].ready, 2000);
  const first = [];
  for (let i = 0; i < 4; i++) first.push(await busy(cli.port, ip));
  await sleep(100);
  expect(first.filter((s) => !s.destroyed).length).toBe(4);
  const w = await untilWorkers(cli.admin, (x) => x[home].ready && x[home].pid !== before[home].pid, 10_000);
  expect(w[home].ready).toBe(true);
  // The replacement owns the source again: the other worker lets go of the four it took (nothing answered on them).
  const closed = await Promise.all(first.map((s) => new Promise<boolean>((r) => { if (s.destroyed) r(true); else { s.once('close', () => r(true)); setTimeout(() => r(false), 2000); } })));
  expect(closed).toEqual([true, true, true, true]);
  // Four new ones are taken; a fifth is over the cap.
  const second = [];
  for (let i = 0; i < 5; i++) second.push(await busy(cli.port, ip));
  await sleep(500);
  expect([...first, ...second].filter((s) => !s.destroyed).length).toBe(4);
}, 30_000);

it('a request being answered on a connection taken for a replaced worker gets its answer before the connection goes', async () => {
  const origin = await startOrigin((_req, res) => setTimeout(() => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 4 }); res.end('slow'); }, 1500));
  const cli = await startCli(HOST, origin.address, { limits: { maxConnectionsPerSource: 4 } });
  const ip = '127.0.97.2';
  const home = shardOf(ip, 2);
  const before = await untilWorkers(cli.admin, () => true, 0);
  process.kill(before[home].pid, 'SIGKILL');
  await untilWorkers(cli.admin, (w) => !w[home].ready, 2000);
  const s = net.connect({ port: cli.port, host: '127.0.0.1', localAddress: ip });
  opened.push(s);
  let text = '';
  s.on('data', (c) => { text += c; });
  s.on('error', () => {});
  const gone = new Promise<void>((r) => s.once('close', () => r()));
  s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  await untilWorkers(cli.admin, (x) => x[home].ready && x[home].pid !== before[home].pid, 10_000);
  await Promise.race([gone, sleep(5000)]);
  expect({ answered: /^HTTP\/1\.1 200[^]*\r\n\r\nslow$/.test(text), closed: s.destroyed }).toEqual({ answered: true, closed: true });
}, 30_000);

const page = (port: number, local: string, cookie?: string) => browserPage(port, local, HOST, cookie);

it('a challenge token the node revoked (over-shared) stays refused by a worker started after the revocation', async () => {
  const origin = await okOrigin();
  const cli = await startCli(HOST, origin.address, { filter: { mode: 'always' } });
  const first = await page(cli.port, '127.0.81.9');
  expect(first.status).toBe(302);
  const statuses: number[] = [];
  for (let n = 1; n <= 6; n++) {
    statuses.push((await page(cli.port, `127.0.${80 + n}.9`, first.cookie)).status);
    await sleep(100);
  }
  // Honoured from 4 networks, refused from the 6th on: the node revoked it.
  expect(statuses.slice(0, 4)).toEqual([200, 200, 200, 200]);
  expect(statuses[5]).toBe(302);
  // Refused in both workers now, from a network it was used from before too.
  const ip = '127.0.81.9';
  expect((await page(cli.port, ip, first.cookie)).status).toBe(302);
  // The worker that owns that source dies (kill -9) and is replaced.
  const home = shardOf(ip, 2);
  const before = await untilWorkers(cli.admin, () => true, 0);
  process.kill(before[home].pid, 'SIGKILL');
  const w = await untilWorkers(cli.admin, (x) => x[home].ready && x[home].pid !== before[home].pid, 10_000);
  expect(w[home].ready).toBe(true);
  // What the node decided of that token is not lost with the worker: still refused.
  expect((await page(cli.port, ip, first.cookie)).status).toBe(302);
}, 30_000);
