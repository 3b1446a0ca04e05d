// The primary's handover of connections to a worker (cluster/pool.ts), with
// real processes: Node passes one descriptor at a time, and a worker takes
// one per turn of its event loop, so connections can wait in the primary
// (a busy worker, a burst of connections). A worker held stopped (SIGSTOP)
// makes that wait as long as the test needs. A ban made meanwhile must not
// wait behind them: the connections of the banned source are refused by the
// primary, and the worker hears of the ban after the one connection already
// on its way, not after all of them. Those refused in the primary are
// dropped at accept as much as those Node refuses there, and are counted so.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startOrigin, startWorkersCli, request, rawExchange, sleep, type Origin } from './helpers/servers.ts';
import { shardOf } from '../src/cluster/protocol.ts';

const HOST = 'site.test';

let cli: Awaited<ReturnType<typeof startWorkersCli>>;
let origin: Origin;
let port = 0, admin = 0;

const api = async (method: string, p: string, body?: unknown) => {
  const r = await request(`http://127.0.0.1:${admin}${p}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: r.status, json: JSON.parse(r.body) };
};
/** /metrics collects from every worker before it answers. */
const droppedAtAccept = async () => Number(/^scrubber_connections_dropped_at_accept_total (\d+)/m.exec((await request(`http://127.0.0.1:${admin}/metrics`)).body)?.[1] ?? NaN);

beforeAll(async () => {
  origin = await startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
  cli = await startWorkersCli(HOST, origin.address);
  ({ port, admin } = cli);
}, 20_000);

afterAll(async () => {
  await cli?.stop();
  await origin?.close();
});

it('connections waiting for a worker: a ban made meanwhile refuses them in the primary, and reaches the worker after the one on its way', async () => {
  const ip = '127.0.81.1';
  const w = (await api('GET', '/api/workers')).json.workers as { index: number; pid: number }[];
  const owner = w[shardOf(ip, 2)];
  const answered = (r: { text: string }) => r.text.startsWith('HTTP/1.1 200');
  // The owner serves the source as usual.
  expect(answered(await rawExchange(port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, { localAddress: ip }))).toBe(true);

  const droppedBefore = await droppedAtAccept();
  process.kill(owner.pid, 'SIGSTOP');
  let exchanges: Promise<{ text: string }>[] = [];
  try {
    // Eight connections, each with its request: the first is on its way to the stopped worker, seven wait.
    exchanges = Array.from({ length: 8 }, () => rawExchange(port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, { localAddress: ip, timeoutMs: 3000 }));
    await sleep(300);
    expect((await api('PUT', `/api/blacklist/${ip}`, { ttlSeconds: 600, reason: 'test' })).status).toBe(200);
  } finally {
    process.kill(owner.pid, 'SIGCONT');
  }
  const results = await Promise.all(exchanges);
  // Before: Node's queue handed all eight over, one per turn of the worker's loop, and the ban came after the last
  // of them: each request was served first. Now at most the one already on its way can be.
  expect(results.filter(answered).length).toBeLessThanOrEqual(1);
  // The seven that waited were dropped at accept, by the primary (the one on its way was accepted by the worker, and
  // closed there by the ban, or served).
  expect(await droppedAtAccept() - droppedBefore).toBe(7);
  // And the source is refused at accept from now on.
  expect((await rawExchange(port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { localAddress: ip, timeoutMs: 1500 })).text).toBe('');
  // The other sources of that worker are served again.
  const other = Array.from({ length: 40 }, (_, i) => `127.0.82.${i + 1}`).find((s) => shardOf(s, 2) === owner.index)!;
  expect(answered(await rawExchange(port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`, { localAddress: other }))).toBe(true);
}, 15_000);
