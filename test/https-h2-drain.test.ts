// Shutdown is bounded on the h2-capable TLS listener too (tls.http2, the
// default): past shutdown.drainTimeoutMs what is still answering is cut, be it
// an HTTP/2 stream or an HTTP/1.1 request that ALPN gave to the same server.
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import tls from 'node:tls';
import http2 from 'node:http2';
import { startOrigin, startProxy, domain, sleep } from './helpers/servers.ts';
import { makePki } from './helpers/certs.ts';

const DRAIN = 400;

describe('a drain on the h2-capable TLS listener', () => {
  it('cuts an HTTP/1.1 request and an HTTP/2 stream still waiting for their upstream at drainTimeoutMs', async () => {
    const pki = makePki();
    // The upstream answers long after the drain is over.
    const origin = await startOrigin((_req, res) => { setTimeout(() => res.end('late'), 6000).unref(); });
    const proxy = await startProxy({
      filter: { mode: 'off' }, shutdown: { drainTimeoutMs: DRAIN },
      tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...pki.leaf('a.test') }] },
      domains: [domain('a.test', [origin.address])],
    });
    const port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
    const ca = fs.readFileSync(pki.ca);
    const h1 = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca, ALPNProtocols: ['http/1.1'] });
    h1.on('error', () => {});
    await new Promise((r) => h1.once('secureConnect', r));
    expect(h1.alpnProtocol).toBe('http/1.1');
    h1.write('GET /slow HTTP/1.1\r\nhost: a.test\r\n\r\n');
    const h2 = http2.connect(`https://a.test:${port}`, { ca, host: '127.0.0.1', servername: 'a.test' } as http2.SecureClientSessionOptions);
    h2.on('error', () => {});
    const stream = h2.request({ ':path': '/slow' });
    stream.on('error', () => {});
    stream.end();
    while (origin.seen.length < 2) await sleep(20);
    const t0 = Date.now();
    await proxy.close();
    const took = Date.now() - t0;
    h1.destroy();
    h2.destroy();
    await origin.close();
    expect(took).toBeGreaterThanOrEqual(DRAIN - 50);
    expect(took).toBeLessThan(DRAIN + 1000);
  }, 15_000);
});
