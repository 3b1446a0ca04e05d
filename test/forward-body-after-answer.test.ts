// An upstream may answer before the request body is whole (it streams its answer while the client still sends). When
// the client's body then fails (past limits.maxBodyBytes, or slower than the minimum rate), the exchange is cut, and
// that used to be recorded as an upstream reset: the statistics' resets and attack mode's "upstream failing" counted
// a fault of the client's, so a client could make a healthy upstream read as failing. Real proxy, a raw upstream that
// answers at the first bytes, a raw client.
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Observation } from '../src/observe/observation.ts';
import { DEFAULT_RULES } from '../src/detect/rules.ts';
import { startProxy, request, domain, type Proxy } from './helpers/servers.ts';

let upstream: net.Server;
let upstreamPort = 0;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  // Answers at the first bytes of a request, and streams its answer without end.
  upstream = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('data', () => s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n3\r\nabc\r\n'));
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamPort = (upstream.address() as net.AddressInfo).port;
});
afterAll(() => { for (const s of sockets) s.destroy(); upstream.close(); });

async function exchange(proxy: Proxy, source: string): Promise<Observation> {
  const seen: Observation[] = [];
  proxy.app.pipeline.onObserve((o) => { if (o.source === source) seen.push(o); });
  const c = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: source });
  c.on('error', () => {});
  c.on('data', () => {});
  c.write('POST /upload HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n' + 'y'.repeat(16) + '\r\n');
  await new Promise((r) => setTimeout(r, 300));
  c.write(`4e20\r\n${'y'.repeat(20000)}\r\n`);
  await expect.poll(() => seen.length, { timeout: 5000 }).toBe(1);
  c.destroy();
  return seen[0];
}

describe('the client\'s body fails after the upstream answered', () => {
  it('past maxBodyBytes: the exchange is cut, and it is no upstream failure', async () => {
    const proxy = await startProxy({ filter: { mode: 'off' }, limits: { maxBodyBytes: 10_000, bufferBodyBytes: 0 }, domains: [domain('site.test', [`127.0.0.1:${upstreamPort}`])] });
    try {
      const o = await exchange(proxy, '127.0.0.161');
      expect(o.status).toBe(200);
      expect(o.upstreamError).toBeNull();
      expect(o.outcome).toBe('proxy');
      // The upstream is as healthy as before.
      expect(proxy.app.upstreams.groups.get('site.test')!.all().every((u) => u.healthy)).toBe(true);
    } finally { await proxy.close(); }
  });

  it('slower than the minimum rate: no upstream failure either, and its source gets the slow signal', async () => {
    // The "slow" rule bans at its first event here, so that the signal shows on the blacklist.
    const rules = DEFAULT_RULES.map((r) => (r.name === 'slow' ? { ...r, capacity: 0.5 } : r));
    const proxy = await startProxy({
      filter: { mode: 'always', rules }, limits: { bufferBodyBytes: 0, minBodyRateBytesPerSec: 1000, minBodyRateGraceMs: 300 },
      domains: [domain('site.test', [`127.0.0.1:${upstreamPort}`])],
    });
    const source = '127.0.0.162';
    try {
      const seen: Observation[] = [];
      proxy.app.pipeline.onObserve((o) => { if (o.source === source) seen.push(o); });
      const c = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: source });
      c.on('error', () => {});
      c.on('data', () => {});
      // A few bytes, then nothing: under the minimum rate once the grace is over.
      c.write('POST /upload HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nyyyy\r\n');
      await expect.poll(() => seen.length, { timeout: 8000 }).toBe(1);
      expect(seen[0].upstreamError).toBeNull();
      await expect.poll(async () => (JSON.parse((await request(`${proxy.adminUrl}/api/blacklist/${source}`)).body) as { listed: boolean; rule?: string }), { timeout: 3000 })
        .toMatchObject({ listed: true, rule: 'slow' });
      c.destroy();
    } finally { await proxy.close(); }
  });
});
