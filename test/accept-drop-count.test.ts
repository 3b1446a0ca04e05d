// Connections refused at accept are counted (Node emits no event for them;
// the filter's BlockList counts its own refusals) and reach /metrics.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, request, rawExchange, domain, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin;
let proxy: Proxy;
const BANNED = '127.0.0.77';

beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startProxy({ domains: [domain('site.test', [origin.address])] });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

describe('connections dropped at accept', () => {
  it('are counted exactly, and shown in /metrics', async () => {
    const put = await request(`${proxy.adminUrl}/api/blacklist/${BANNED}`, { method: 'PUT', body: JSON.stringify({ ttlSeconds: 600, reason: 'test' }) });
    expect(put.status).toBe(200);
    const before = proxy.app.filter.snapshot().counters.droppedConnections ?? 0;
    for (let i = 0; i < 7; i++) {
      const r = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: site.test\r\n\r\n', { localAddress: BANNED, timeoutMs: 1000 });
      expect(r.text).toBe('');
    }
    // Another source is served meanwhile, and not counted.
    expect((await request(proxy.url, { headers: { host: 'site.test' }, localAddress: '127.0.0.78' })).status).toBe(200);
    expect(proxy.app.filter.snapshot().counters.droppedConnections).toBe(before + 7);
    await expect.poll(async () => {
      const m = (await request(`${proxy.adminUrl}/metrics`)).body;
      return Number(/^scrubber_connections_dropped_at_accept_total (\d+)/m.exec(m)?.[1] ?? -1);
    }, { timeout: 12000, interval: 500 }).toBeGreaterThanOrEqual(7);
  });
});
