// Long answers in statistics and billing (SPEC §7: a month's bill is built
// from the 3-minute samples of passed traffic), with a real proxy in-process
// and a real streaming origin. Both failed on the code before 2026-11-29:
// - none of the bytes a client took of a response it stopped reading half-way
//   were billed (the request counts as the proxy's answer; a download site's
//   traffic); now each MiB that went out is told as passed bytes as it goes;
// - a long response's bytes all landed in the bucket, and the month, where it
//   ended; now told as they go, each MiB.
import { describe, it, expect, afterEach, vi } from 'vitest';
import http from 'node:http';
import { startOrigin, startProxy, request, domain, sleep, until, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin | null = null;
let proxy: Proxy | null = null;
afterEach(async () => {
  vi.useRealTimers();
  await proxy?.close(); proxy = null;
  await origin?.close(); origin = null;
});

const sum = (buckets: any[], f: (b: any) => number) => buckets.reduce((a, b) => a + f(b), 0);
const api = async (p: string) => JSON.parse((await request(proxy!.adminUrl + p)).body);

describe('long answers in statistics and billing', () => {
  // A visitor who closes a video or a download half-way has still been sent (and the origin has still served)
  // every byte up to then: passed traffic, legitimate bandwidth. The proxy did not answer it itself.
  it('a response the client stops reading half-way still counts its delivered bytes as passed (billed) traffic', async () => {
    const CHUNK = 64 * 1024;
    origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(CHUNK * 1000) });
      // 1 MiB now, the rest never (a long download still running when the visitor leaves).
      for (let i = 0; i < 16; i++) res.write(Buffer.alloc(CHUNK, 1));
    });
    proxy = await startProxy({ domains: [domain('a.test', [origin.address])] });
    let got = 0;
    await new Promise<void>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: proxy!.port, path: '/video.bin', headers: { host: 'a.test' } }, (res) => {
        res.on('data', (d: Buffer) => { got += d.length; if (got >= 16 * CHUNK) { req.destroy(); resolve(); } });
      });
      req.on('error', () => {});
      setTimeout(() => reject(new Error(`only ${got} bytes came`)), 5000).unref();
    });
    expect(got).toBeGreaterThanOrEqual(16 * CHUNK);
    // Observed when the forward notices the client left.
    let buckets: any[] = [];
    for (let i = 0; i < 20; i++) { buckets = (await api('/api/stats?domain=a.test')).buckets; if (sum(buckets, (b) => b.incoming.requests) > 0) break; await sleep(100); }
    expect(sum(buckets, (b) => b.incoming.requests)).toBe(1);
    expect(sum(buckets, (b) => b.incoming.bytesOut)).toBeGreaterThanOrEqual(16 * CHUNK);
    // The 1 MiB the visitor received is passed traffic, and it is in the month's billing sample.
    expect(sum(buckets, (b) => b.passed.bytesOut)).toBeGreaterThanOrEqual(16 * CHUNK);
    const bill = await api('/api/billing?domain=a.test');
    expect(sum(bill.samples, (s: any) => s.bytesOut)).toBeGreaterThanOrEqual(16 * CHUNK);
  }, 20000);

  // A long response (a big download, a video, server-sent events) sends its bytes over many minutes; a 3-minute
  // sample is the bandwidth used in those 3 minutes (SPEC §7), and the billing month is the UTC month they were
  // used in. The README says so of WebSocket tunnels ("so they land in the 3-minute samples they used"), and lists
  // counting in "the bucket where it ended" as a known gap of passthrough only.
  it('bytes of a long response sent in January are in January\'s buckets and bill, not in February\'s', async () => {
    const CHUNK = 64 * 1024;
    const JAN_END = Date.UTC(2025, 0, 31, 23, 59, 0); // the last bucket of January starts at 23:57
    vi.useFakeTimers({ toFake: ['Date'], now: JAN_END, shouldAdvanceTime: true });
    let live: http.ServerResponse | null = null;
    origin = await startOrigin((_req, res) => {
      live = res;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 0; i < 16; i++) res.write(Buffer.alloc(CHUNK, 0x61));
    });
    proxy = await startProxy({ domains: [domain('a.test', [origin.address])] });
    let got = 0;
    let ended = false;
    const req = http.get({ host: '127.0.0.1', port: proxy.port, path: '/events', headers: { host: 'a.test' } }, (res) => {
      res.on('data', (d: Buffer) => { got += d.length; });
      res.on('end', () => { ended = true; });
    });
    req.on('error', () => {});
    expect(await until(() => got >= 16 * CHUNK, 5000)).toBe(true);
    // 1 MiB delivered in January, and 11 s more of January pass (a tunnel's bytes are told every 10 s: any such
    // reporting has had its turn). The stream goes on into February, and ends there with a few bytes more.
    await sleep(11_000);
    expect(new Date().toISOString() < '2025-02-01').toBe(true);
    vi.setSystemTime(Date.UTC(2025, 1, 1, 0, 1, 0));
    (live as http.ServerResponse | null)!.end('data: bye\n\n');
    expect(await until(() => ended, 5000)).toBe(true);
    await sleep(200);
    const jan = await api('/api/billing?domain=a.test&month=2025-01');
    const feb = await api('/api/billing?domain=a.test&month=2025-02');
    const janBucket = await api(`/api/stats?domain=a.test&from=${JAN_END / 1000 - 120}&to=${Date.UTC(2025, 1, 1) / 1000}`);
    const sentInFeb = sum(feb.samples, (s: any) => s.bytesOut);
    expect({ janBilledBytes: sum(jan.samples, (s: any) => s.bytesOut), janBucketBytes: sum(janBucket.buckets, (b) => b.passed.bytesOut), sentInFeb })
      .toEqual({ janBilledBytes: 16 * CHUNK, janBucketBytes: 16 * CHUNK, sentInFeb: 'data: bye\n\n'.length });
  }, 40000);
});
