// A client that takes no byte of its response for limits.sendTimeoutMs is cut, and its source gets a "slow" signal.
// The signal used to come only when the cut fell before the upstream part ended (a response larger than the
// read-ahead): a response that fitted was observed as passed at once, and the cut a minute later told nobody, so a
// source holding connections with unread pages was never counted as slow. Real proxy, real origin, a raw client that
// stops reading; the "slow" rule set to ban at its first event so that the signal shows on the blacklist.
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_RULES } from '../src/detect/rules.ts';
import { startProxy, startOrigin, request, domain, type Origin, type Proxy } from './helpers/servers.ts';

const KIB = 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What loopback's socket buffers take of a response the client does not read (measured: it varies by kernel). */
async function kernelAbsorbs(): Promise<number> {
  let written = 0, last = -1;
  const chunk = Buffer.alloc(64 * KIB);
  const server = http.createServer((_q, res) => {
    res.writeHead(200, { 'content-length': 256 * 1024 * KIB });
    const pump = () => { while (written < 256 * 1024 * KIB) { written += chunk.length; if (!res.write(chunk)) return void res.once('drain', pump); } };
    pump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const s = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  s.on('error', () => {});
  s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  s.pause();
  for (let i = 0; i < 30 && written !== last; i++) { last = written; await sleep(200); }
  s.destroy();
  server.closeAllConnections();
  server.close();
  return written;
}

let origin: Origin;
let proxy: Proxy;
let size = 0;
const SOURCE = '127.0.0.151';

beforeAll(async () => {
  // Past what the sockets take by half a MiB: the proxy holds the rest in its read-ahead (1 MiB), so the upstream
  // part ends at once and the request is observed before the deadline cuts the client.
  size = (await kernelAbsorbs()) + 512 * KIB;
  const chunk = Buffer.alloc(64 * KIB, 120);
  origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
    let sent = 0;
    const pump = () => { while (sent < size) { const c = chunk.subarray(0, Math.min(chunk.length, size - sent)); sent += c.length; if (!res.write(c)) return void res.once('drain', pump); } res.end(); };
    pump();
  });
  const rules = DEFAULT_RULES.map((r) => (r.name === 'slow' ? { ...r, capacity: 0.5 } : r));
  proxy = await startProxy({ limits: { sendTimeoutMs: 1000 }, filter: { mode: 'always', rules }, domains: [domain('site.test', [origin.address])] });
});
afterAll(async () => { await proxy?.close(); await origin?.close(); });

describe('a reader cut by the send deadline', () => {
  it('after its response was read ahead whole: cut, and its source counted as slow (banned here at the first event)', async () => {
    let observedAt = 0;
    proxy.app.pipeline.onObserve((o) => { if (o.source === SOURCE && !observedAt) observedAt = performance.now(); });
    const s = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: SOURCE });
    s.on('error', () => {});
    s.write('GET /file HTTP/1.1\r\nHost: site.test\r\n\r\n');
    s.pause();
    const t0 = performance.now();
    await expect.poll(() => observedAt > 0, { timeout: 3000 }).toBe(true);
    const listed = async () => (JSON.parse((await request(`${proxy.adminUrl}/api/blacklist/${SOURCE}`)).body) as { listed: boolean }).listed;
    // Observed (passed) with nothing against it yet: the case that used to tell nobody.
    expect(await listed()).toBe(false);
    await expect.poll(listed, { timeout: 5000, interval: 100 }).toBe(true);
    // At the deadline (1 s without progress), not at the observation.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
    expect((JSON.parse((await request(`${proxy.adminUrl}/api/blacklist/${SOURCE}`)).body) as { rule: string }).rule).toBe('slow');
    s.destroy();
  });
});
