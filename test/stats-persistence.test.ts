// Nothing counted is lost on a clean restart, and the timer writes to the
// store while the proxy runs (off the request path): real proxy, real sqlite
// file under state.dir.
import { describe, it, expect, afterEach } from 'vitest';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { startOrigin, startProxy, request, domain, tempDir, sleep, type Origin, type Proxy } from './helpers/servers.ts';
import { DEFAULT_FLUSH_MS } from '../src/stats/index.ts';

let origin: Origin | null = null;
let proxy: Proxy | null = null;
afterEach(async () => { await proxy?.close(); proxy = null; await origin?.close(); origin = null; });

const sum = (buckets: any[], f: (b: any) => number) => buckets.reduce((a, b) => a + f(b), 0);
const send = async (n: number) => { for (let i = 0; i < n; i++) expect((await request(proxy!.url + '/p', { headers: { host: 'a.test' } })).status).toBe(200); };

describe('statistics persistence', () => {
  it('keeps every counted request across a clean restart on the same state dir', async () => {
    origin = await startOrigin();
    const dir = tempDir();
    const cfg = { state: { dir }, domains: [domain('a.test', [origin.address])] };
    proxy = await startProxy(cfg);
    await send(4);
    // Counted but not yet flushed by the timer: close() must write it.
    await proxy.close();
    proxy = await startProxy(cfg);
    await send(3);
    const r = await request(proxy.adminUrl + '/api/stats?domain=a.test');
    const buckets = JSON.parse(r.body).buckets;
    expect(sum(buckets, (b) => b.incoming.requests)).toBe(7);
    expect(sum(buckets, (b) => b.passed.requests)).toBe(7);
    const bill = JSON.parse((await request(proxy.adminUrl + '/api/billing?domain=a.test')).body);
    expect(sum(bill.samples, (s: any) => s.bytesOut)).toBe(sum(buckets, (b) => b.passed.bytesOut));
    await proxy.close();
    proxy = null;
    // And the file itself holds them after the second shutdown.
    const db = new DatabaseSync(path.join(dir, 'scrubber.db'), { readOnly: true });
    const row = db.prepare('SELECT SUM(req_in) AS n FROM stats_domain_bucket WHERE domain = ?').get('a.test') as { n: number };
    db.close();
    expect(row.n).toBe(7);
  });

  it('writes to the store every few seconds while running, not only on shutdown', async () => {
    origin = await startOrigin();
    const dir = tempDir();
    proxy = await startProxy({ state: { dir }, domains: [domain('a.test', [origin.address])] });
    await send(2);
    const read = () => {
      const db = new DatabaseSync(path.join(dir, 'scrubber.db'), { readOnly: true });
      try { return (db.prepare('SELECT COALESCE(SUM(req_in), 0) AS n FROM stats_domain_bucket').get() as { n: number }).n; } finally { db.close(); }
    };
    const deadline = Date.now() + DEFAULT_FLUSH_MS * 2 + 2000;
    let n = read();
    while (n < 2 && Date.now() < deadline) { await sleep(250); n = read(); }
    expect(n).toBe(2);
  }, 20000);
});
