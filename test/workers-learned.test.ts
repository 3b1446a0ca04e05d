// The learned rate baseline with workers, black-box: the real CLI on real sockets. The primary learns the node's rate
// on the sum of its workers' seconds (what /api/domains shows), and it is stored as the node's, so a restart with
// another `workers` count starts from the same baseline, not from one worker's share.
// The adaptive upstream limit's start (and floor) is shared out the same way: the node starts where one process would.
import { afterEach, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { startOrigin, startCli, freePort, tempDir, request, sleep, type Origin } from './helpers/servers.ts';

const HOST = 'learn.test';
const RATE = 60; // requests a second, spread over SOURCES addresses (a calm site: far under every rule)
const SOURCES = 24;

let child: ChildProcess | null = null;
let origin: Origin | null = null;
afterEach(async () => {
  if (child && child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await new Promise((r) => child!.once('exit', r)); }
  child = null;
  await origin?.close();
  origin = null;
});

async function run(file: string, admin: number): Promise<void> {
  ({ child } = await startCli(file, { env: { ...process.env, SCRUBBER_LOG_LEVEL: 'info' } }));
  // Started, and its admin API answering.
  for (let i = 0; i < 100 && (await request(`http://127.0.0.1:${admin}/api/domains`).catch(() => null))?.status !== 200; i++) await sleep(50);
}

async function stop(): Promise<void> {
  const c = child!;
  c.kill('SIGTERM');
  await new Promise((r) => c.once('exit', r));
}

function get(port: number, local: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', localAddress: local, agent: false, headers: { host: HOST } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
    req.setTimeout(3000, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Calm traffic at RATE req/s for `ms`, each request from the next of SOURCES addresses. */
async function calm(port: number, ms: number): Promise<number> {
  let ok = 0;
  const pending: Promise<void>[] = [];
  const t0 = Date.now();
  for (let n = 0; Date.now() - t0 < ms; n++) {
    pending.push(get(port, `127.0.61.${(n % SOURCES) + 1}`).then((s) => { if (s === 200) ok++; }));
    const due = t0 + ((n + 1) * 1000) / RATE;
    await sleep(Math.max(0, due - Date.now()));
  }
  await Promise.all(pending);
  return ok;
}

const baseline = async (admin: number): Promise<number> => {
  const j = JSON.parse((await request(`http://127.0.0.1:${admin}/api/domains`)).body);
  return j.domains.find((d: { name: string }) => d.name === HOST).attack.baselineRps;
};

describe('learned rate baseline with workers', () => {
  it('is the node\'s on /api/domains with two workers, and a restart as one process keeps it', async () => {
    origin = await startOrigin((_q, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
    const dir = tempDir('scrubber-learned-');
    const port = await freePort(), admin = await freePort();
    const file = path.join(dir, 'c.json');
    // learnSeconds 4: the first 4 calm seconds are a plain running mean of the rate (no 5-minute time constant).
    const config = (workers: number) => ({
      listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, workers,
      state: { dir: path.join(dir, 'data') }, shutdown: { drainTimeoutMs: 500 },
      filter: { attack: { learnSeconds: 4 } },
      domains: [{ name: HOST, upstreams: [origin!.address] }],
    });
    fs.writeFileSync(file, JSON.stringify(config(2)));
    await run(file, admin);
    // Read and stopped while the traffic still runs: idle seconds would be learned too (a rate of 0 pulling the
    // baseline down), and how many of them fall in depends on how busy the machine is.
    const traffic = calm(port, 8000);
    await sleep(6500); // the workers' attack states reach the primary with their reports, once a second
    const two = await baseline(admin);
    // The node took RATE a second; one worker's share would be about half of it.
    expect(two).toBeGreaterThan(RATE * 0.7);
    expect(two).toBeLessThan(RATE * 1.3);
    await stop(); // each worker saves what it learned on the way out
    expect(await traffic).toBeGreaterThan(RATE * 5);

    fs.writeFileSync(file, JSON.stringify(config(1)));
    await run(file, admin);
    const one = await baseline(admin);
    expect(one).toBeGreaterThan(two * 0.75);
    expect(one).toBeLessThan(two * 1.3);
    await stop();
  }, 40_000);

  it('the adaptive limit of the node starts at limits.adaptive.initialLimit in all, not per worker', async () => {
    origin = await startOrigin((_q, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
    const dir = tempDir('scrubber-limit-');
    const port = await freePort(), admin = await freePort();
    const file = path.join(dir, 'c.json');
    fs.writeFileSync(file, JSON.stringify({
      listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, workers: 2,
      state: { dir: path.join(dir, 'data') }, shutdown: { drainTimeoutMs: 500 },
      limits: { adaptive: { initialLimit: 24, minLimit: 8 } },
      domains: [{ name: HOST, upstreams: [origin!.address] }],
    }));
    await run(file, admin);
    // A few requests from addresses of both workers (sources are sharded), far too few to move the limit.
    for (let i = 1; i <= 8; i++) expect(await get(port, `127.0.62.${i}`)).toBe(200);
    await sleep(1500); // the workers' queue views reach the primary with their next report
    const j = JSON.parse((await request(`http://127.0.0.1:${admin}/api/domains`)).body);
    // Each of the two workers starts at 12: the origin gets 24 requests at once from the node, as from one process.
    expect(j.domains.find((d: { name: string }) => d.name === HOST).queue.limit).toBe(24);
    await stop();
  }, 30_000);
});
