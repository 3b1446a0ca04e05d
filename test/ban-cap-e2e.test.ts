// filter.maxBans on the real CLI with two workers: the primary (which drops at accept) and each worker hold at most
// that many bans; past it the bans ending soonest are lifted (their sources are accepted again), the rest still
// dropped at accept, and /metrics counts what the cap lifted. Memory stays bounded whatever the number of sources
// banned (SPEC §6); without the cap a flood of ever new IPv6 /64s grew the blacklist without end.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startWorkersCli, request, rawExchange, type Origin } from './helpers/servers.ts';

let origin: Origin;
let proxy: Awaited<ReturnType<typeof startWorkersCli>>;
const CAP = 3;
const ip = (i: number) => `127.0.0.${81 + i}`; // 0–5

beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startWorkersCli('site.test', origin.address, { filter: { maxBans: CAP } });
});
afterAll(async () => { await proxy.stop(); await origin.close(); });

describe('filter.maxBans', () => {
  it('holds the cap: the bans ending soonest are lifted and accepted again, the others dropped at accept, and counted', async () => {
    const admin = `http://127.0.0.1:${proxy.admin}`;
    // Banned in an order unrelated to their ends: 0 ends first, 4 last.
    for (const i of [2, 0, 4, 1, 3]) {
      const r = await request(`${admin}/api/blacklist/${ip(i)}`, { method: 'PUT', body: JSON.stringify({ ttlSeconds: 600 + i * 60, reason: 'test' }) });
      expect(r.status, r.body).toBe(200);
    }
    const list = JSON.parse((await request(`${admin}/api/blacklist`)).body) as { entries: { ip: string }[] };
    expect(list.entries.map((e) => e.ip).sort()).toEqual([ip(2), ip(3), ip(4)]);
    // Dropped at accept (no answer at all), or served.
    const answered = async (i: number) => (await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n', { localAddress: ip(i), timeoutMs: 2000 })).text.startsWith('HTTP/1.1 200');
    for (const i of [0, 1]) expect(await answered(i), ip(i)).toBe(true);
    for (const i of [2, 3, 4]) expect(await answered(i), ip(i)).toBe(false);
    await expect.poll(async () => Number(/^scrubber_bans_evicted_total (\d+)/m.exec((await request(`${admin}/metrics`)).body)?.[1] ?? -1), { timeout: 12000, interval: 500 }).toBe(2);
    // A ban ending sooner than all the (manual) ones held is lifted as soon as it is made: the answer says so.
    const short = await request(`${admin}/api/blacklist/${ip(5)}`, { method: 'PUT', body: JSON.stringify({ ttlSeconds: 60, reason: 'test' }) });
    expect(short.status).toBe(200);
    expect(JSON.parse(short.body)).toMatchObject({ ip: ip(5), listed: false });
    expect(await answered(5)).toBe(true);
  });
});
