// A ban decided by detection is data like an operator's: a proxy killed with
// -9 just after it comes back with it. Bans used to wait for the next periodic
// save (every second); now the decision is written within the turn of the
// event loop that made it (several bans in one turn: one transaction). Real
// processes: the CLI alone and with two workers (where a worker decides and the
// primary stores), flooded until the ban is listed, then SIGKILL and a restart.
import { afterAll, expect, it } from 'vitest';
import http from 'node:http';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { startOrigin, startWorkersCli, startCli, request, type Origin } from './helpers/servers.ts';

const HOST = 'durable.test';
let origin: Origin;
const children: ChildProcess[] = [];

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await origin?.close();
});

const listed = async (admin: number, ip: string) => JSON.parse((await request(`http://127.0.0.1:${admin}/api/blacklist/${ip}`)).body).listed === true;

for (const workers of [1, 2]) {
  it(`an automatic ban survives kill -9 of the proxy right after it (${workers} worker${workers > 1 ? 's' : ''})`, async () => {
    origin ??= await startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
    const cli = await startWorkersCli(HOST, origin.address, { workers, filter: { mode: 'always' } });
    children.push(cli.child);
    const ip = `127.0.94.${workers}`;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8, localAddress: ip });
    const get = () => new Promise<void>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: cli.port, path: '/', agent, headers: { host: HOST } }, (res) => { res.resume(); res.on('end', () => resolve()); });
      req.setTimeout(2000, () => req.destroy());
      req.on('error', () => resolve());
      req.end();
    });
    // Flood in the background; the ban is looked for as often as the admin API answers, and the proxy killed at once.
    let flooding = true;
    const flood = (async () => { const t0 = Date.now(); while (flooding && Date.now() - t0 < 10_000) await Promise.all(Array.from({ length: 16 }, get)); })();
    const t0 = Date.now();
    let seen = false;
    while (!seen && Date.now() - t0 < 10_000) seen = await listed(cli.admin, ip);
    cli.child.kill('SIGKILL');
    flooding = false;
    await once(cli.child, 'exit');
    await flood;
    agent.destroy();
    expect(seen).toBe(true);

    const again = await startCli(cli.file);
    children.push(again.child);
    try {
      expect(await listed(cli.admin, ip)).toBe(true);
    } finally {
      again.child.kill('SIGTERM');
      await once(again.child, 'exit');
    }
  }, 30_000);
}
