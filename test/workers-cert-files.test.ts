// With workers, every worker builds its TLS from the certificate bytes the primary read (at its start, at each
// reload), not from the disk. A worker replaced after its certificate file was moved or deleted (a rotation, an old
// file cleaned up) used to read the path again, fail, and be restarted for good: its index never ready, its sources
// spread over the others. Real processes (bin/scrubber.js, two workers), a real TLS client.
import fs from 'node:fs';
import https from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorkersCli, startOrigin, freePort, request, type Origin } from './helpers/servers.ts';
import { makePki } from './helpers/certs.ts';

let origin: Origin;
let cli: Awaited<ReturnType<typeof startWorkersCli>>;
let tlsPort: number;
let ca: Buffer;
let leaf: { cert: string; key: string };

beforeAll(async () => {
  origin = await startOrigin();
  const pki = makePki();
  leaf = pki.leaf('a.test');
  ca = fs.readFileSync(pki.ca);
  tlsPort = await freePort();
  cli = await startWorkersCli('a.test', origin.address, { tls: { listen: [{ host: '127.0.0.1', port: tlsPort }], certs: [{ domains: ['a.test'], ...leaf }] } });
});
afterAll(async () => { await cli?.stop(); await origin?.close(); });

type WorkerView = { index: number; pid: number; ready: boolean };
const workers = async () => (JSON.parse((await request(`http://127.0.0.1:${cli.admin}/api/workers`)).body) as { workers: WorkerView[] }).workers;

const get = (localAddress: string) => new Promise<number>((resolve, reject) => {
  const req = https.request({ host: '127.0.0.1', port: tlsPort, servername: 'a.test', ca, path: '/', headers: { host: 'a.test' }, localAddress, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
  req.on('error', reject);
  req.setTimeout(3000, () => req.destroy(new Error('timeout')));
  req.end();
});

describe('workers and the certificate files', () => {
  it('a worker replaced after its certificate file went away starts on the bytes the primary read, and serves HTTPS', async () => {
    const before = await workers();
    expect(before.every((w) => w.ready)).toBe(true);
    fs.renameSync(leaf.cert, `${leaf.cert}.moved`);
    fs.renameSync(leaf.key, `${leaf.key}.moved`);
    process.kill(before[0].pid, 'SIGKILL');
    await expect.poll(async () => { const w = (await workers()).find((x) => x.index === 0); return !!w && w.ready && w.pid !== before[0].pid; }, { timeout: 15_000, interval: 200 }).toBe(true);
    // Sources spread over both workers: every one is served, the replaced worker's too.
    for (let i = 1; i <= 8; i++) expect(await get(`127.0.0.${120 + i}`), `source 127.0.0.${120 + i}`).toBe(200);
    expect((await workers()).find((w) => w.index === 0)!.pid).not.toBe(before[0].pid);
  });

  it('a reload while the files are gone is refused, naming the file, and every worker goes on serving', async () => {
    const r = await request(`http://127.0.0.1:${cli.admin}/api/reload`, { method: 'POST' });
    expect(r.status).toBe(400);
    expect(r.body).toContain(leaf.cert);
    for (let i = 1; i <= 4; i++) expect(await get(`127.0.0.${130 + i}`)).toBe(200);
  });
});
