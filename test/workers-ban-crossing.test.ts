// A worker's automatic ban and an operator's ban of the same source crossing
// on the way to the primary (real CLI, two workers): the primary records the
// operator's ban, then reads the worker's, decided a moment earlier. The later
// decision stands, as at a join and in Redis: the operator's day, not the
// worker's half hour, is what the primary keeps, stores and passes on, and the
// one ban is counted once. The crossing is made certain by holding the primary
// stopped (SIGSTOP): the operator's request is written on an open admin
// connection first, then the worker bans (it serves a connection it already
// has), and the primary, resumed, reads them in that order.
import { afterAll, beforeAll, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { startOrigin, startWorkersCli, request, sleep, tempDir, until, type Origin } from './helpers/servers.ts';
import { MAX_BAN_SECONDS } from '../src/decisions/ban-time.ts';
import { Decisions } from '../src/decisions/decisions.ts';
import type { Decision, DecisionBus } from '../src/decisions/bus.ts';
import { LocalBus } from '../src/decisions/bus.ts';
import { openStore } from '../src/store/db.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { createLogger } from '../src/log.ts';

const HOST = 'site.test';
const IP = '127.0.83.1';

let cli: Awaited<ReturnType<typeof startWorkersCli>>;
let origin: Origin;

beforeAll(async () => {
  // Every path but / is a 404: the `probe` rule (404 scanning, always enforced) bans after a dozen of them.
  origin = await startOrigin((req, res) => { res.writeHead(req.url === '/' ? 200 : 404, { 'content-type': 'text/plain' }); res.end('x'); });
  cli = await startWorkersCli(HOST, origin.address, { log: { level: 'info' } });
}, 20_000);

afterAll(async () => {
  if (cli?.child.pid) try { process.kill(cli.child.pid, 'SIGCONT'); } catch { /* gone */ }
  await cli?.stop();
  await origin?.close();
});

/** A kept-alive connection, its answers collected. */
async function connection(port: number, localAddress?: string) {
  const s = net.connect({ port, host: '127.0.0.1', localAddress });
  await once(s, 'connect');
  const st = { text: '' };
  s.on('data', (d) => { st.text += d; });
  s.on('error', () => {});
  return { s, st };
}

it("an operator's ban crossing a worker's earlier automatic ban of the source stands at the primary", async () => {
  // Both connections are open (and the source's handed to its worker) before the primary stops.
  const client = await connection(cli.port, IP);
  client.s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  expect(await until(() => client.st.text.includes('200 OK'), 3000)).toBe(true);
  const admin = await connection(cli.admin);
  admin.s.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${cli.admin}\r\n\r\n`);
  expect(await until(() => admin.st.text.includes('200 OK'), 3000), admin.st.text).toBe(true);

  const body = JSON.stringify({ ttlSeconds: MAX_BAN_SECONDS, reason: 'operator' });
  process.kill(cli.child.pid!, 'SIGSTOP');
  try {
    admin.s.write(`PUT /api/blacklist/${IP} HTTP/1.1\r\nHost: 127.0.0.1:${cli.admin}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await sleep(100);
    // The worker bans the source (a 404 scan) while the primary cannot read its word of it yet.
    for (let i = 0; i < 20 && !client.s.destroyed; i++) {
      const n = client.st.text.split('HTTP/1.1 ').length;
      client.s.write(`GET /scan${i} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
      await until(() => client.st.text.split('HTTP/1.1 ').length > n || client.s.destroyed, 1000);
    }
    expect(await until(() => /"rule":"probe"[^\n]*"msg":"source banned"|"msg":"source banned"[^\n]*"rule":"probe"/.test(cli.logs()), 5000), cli.logs()).toBe(true);
    await sleep(100);
  } finally {
    process.kill(cli.child.pid!, 'SIGCONT');
  }
  expect(await until(() => admin.st.text.includes('"rule":"manual"'), 3000), admin.st.text).toBe(true);
  client.s.destroy();
  admin.s.destroy();
  await sleep(300);
  const entry = JSON.parse((await request(`http://127.0.0.1:${cli.admin}/api/blacklist/${IP}`)).body) as { listed: boolean; rule: string; reason: string; expiresAt: string };
  expect(entry).toMatchObject({ listed: true, rule: 'manual', reason: 'operator' });
  expect(Date.parse(entry.expiresAt) - Date.now()).toBeGreaterThan((MAX_BAN_SECONDS - 60) * 1000);
}, 20_000);

it("the primary's side: a worker's ban older than the one in force is not taken (nor stored, passed on or counted); a later one is, and a tie keeps the one in force", () => {
  const published: Decision[] = [];
  const bus: DecisionBus = Object.assign(new LocalBus(), { publish: (d: Decision) => { published.push(d); } });
  const store = new SqliteFilterStore(openStore(tempDir()));
  const t = 1_800_000_000_000;
  const d = new Decisions({ repeatGrowth: 2, repeatHalfLifeHours: 24, timeScale: 1, maxSources: 1000 }, [], { store, log: createLogger('silent'), bus }, t);
  const manual = d.manualBan(IP, MAX_BAN_SECONDS, 'operator', t);
  const auto = (since: number) => ({ ip: IP, reason: 'probe', rule: 'probe', since, expiresAt: since + 3600_000 });
  d.adopt(auto(t - 5));
  d.adopt(auto(t));
  expect(d.banOf(IP)).toEqual(manual);
  expect(d.bansTotal).toBe(1);
  expect(d.bansByRule.get('probe')).toBeUndefined();
  expect(published).toEqual([{ kind: 'ban', entry: manual }]);
  store.flush();
  expect(store.loadBans(t + 1)).toEqual([manual]);
  // A decision made after the operator's (the worker banned the source again, later) stands, as anywhere else.
  d.adopt(auto(t + 5));
  expect(d.banOf(IP)).toEqual(auto(t + 5));
  expect(d.bansTotal).toBe(2);
  expect(published.at(-1)).toEqual({ kind: 'ban', entry: auto(t + 5) });
});
