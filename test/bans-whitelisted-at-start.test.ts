// A ban the whitelist covers is lifted, and stays lifted: a whitelist entry
// added by a reload deletes the bans it covers from the store. One added to the
// config while the proxy was down used to leave them in the store, only not
// loaded: once the entry was taken out of the config again, the next start
// banned the source anew, with the reason and expiry of the ban the whitelist
// had lifted. Real processes: the CLI, stopped and started on one state folder.
import { afterAll, expect, it } from 'vitest';
import fs from 'node:fs';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { startCli, startOrigin, startWorkersCli, request, type Origin } from './helpers/servers.ts';

const IP = '127.0.96.1';
let origin: Origin;
const children: ChildProcess[] = [];

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await origin?.close();
});

async function stop(c: ChildProcess): Promise<void> {
  c.kill('SIGTERM');
  await once(c, 'exit');
}

it('a ban lifted by a config whitelist entry at start does not come back when the entry is removed', async () => {
  origin = await startOrigin();
  const cli = await startWorkersCli('site.test', origin.address, { workers: 1 });
  children.push(cli.child);
  const admin = `http://127.0.0.1:${cli.admin}/api/blacklist/${IP}`;
  const listed = async () => JSON.parse((await request(admin)).body).listed as boolean;
  const put = await request(admin, { method: 'PUT', body: JSON.stringify({ ttlSeconds: 3600, reason: 'abuse' }) });
  expect(put.status).toBe(200);
  await stop(cli.child);

  const withEntry = { ...cli.config, filter: { whitelist: [IP] } };
  fs.writeFileSync(cli.file, JSON.stringify(withEntry));
  const second = await startCli(cli.file);
  children.push(second.child);
  expect(await listed()).toBe(false);
  await stop(second.child);

  fs.writeFileSync(cli.file, JSON.stringify(cli.config));
  const third = await startCli(cli.file);
  children.push(third.child);
  expect(await listed()).toBe(false);
  await stop(third.child);
}, 30_000);
