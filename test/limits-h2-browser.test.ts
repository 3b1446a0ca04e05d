// The per-source in-flight cap against one HTTP/2 browser, with the DEFAULT config. All servers bind to 127.0.0.1 and
// every client connects there. Failed on the code before 2026-11-29:
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import fs from 'node:fs';
import { startOrigin, startProxy, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

// 1. The per-source in-flight cap (limits.maxInflightPerSource, 24) is sized for HTTP/1.1 browsers ("at most 6
//    connections"), but the TLS listener offers HTTP/2 by default with 100 streams per connection. A single browser
//    on h2 loading one page with 40 images sends all 40 at once on one connection: 16 of them get 503 "overloaded",
//    from a healthy, idle origin, and the source is counted as hitting the cap ('overCap', a flooding sign). Now the
//    connection is told SETTINGS_MAX_CONCURRENT_STREAMS = the cap, and the browser holds back the rest itself.
describe('per-source cap vs one HTTP/2 browser', () => {
  let pki: TestPki; let origin: Origin; let proxy: Proxy; let port: number;
  beforeAll(async () => {
    pki = makePki();
    const a = pki.leaf('a.test');
    origin = await startOrigin((_req, res) => { setTimeout(() => { res.setHeader('content-type', 'image/png'); res.end('x'); }, 150); });
    proxy = await startProxy({
      tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }] },
      domains: [domain('a.test', [origin.address])],
    });
    port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
  });
  afterAll(async () => { await proxy.close(); await origin.close(); });

  it('a browser fetching 40 images of one page over one h2 connection gets them all', async () => {
    const s = await new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      const c = http2.connect(`https://a.test:${port}`, { ca: fs.readFileSync(pki.ca), host: '127.0.0.1', servername: 'a.test' } as http2.SecureClientSessionOptions);
      c.once('remoteSettings', () => resolve(c)); c.once('error', reject);
    });
    expect(s.remoteSettings.maxConcurrentStreams).toBe(24);
    const ua = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';
    const one = (i: number) => new Promise<string>((resolve) => {
      const r = s.request({ ':path': `/img/${i}.png`, 'user-agent': ua, accept: 'image/avif,image/webp,*/*', 'accept-language': 'en-US,en;q=0.9', referer: `https://a.test/` });
      let st = 0, xs = '';
      r.on('response', (h) => { st = Number(h[':status']); xs = String(h['x-scrubber'] ?? ''); });
      r.resume(); r.on('end', () => resolve(`${st}${xs ? ' ' + xs : ''}`)); r.on('error', () => resolve('error'));
    });
    const got = await Promise.all(Array.from({ length: 40 }, (_, i) => one(i)));
    s.close();
    const refused = got.filter((x) => x !== '200');
    expect(refused, `refused: ${refused.length} (${[...new Set(refused)].join(', ')})`).toEqual([]);
  }, 20_000);
});
