// Everything the proxy does on HTTP/1.1 it does on HTTP/2 (issue #13): one
// connection carries many streams, and the per-source counts, the challenge
// and statistics must still hold; HTTPS upstreams stay verified with HTTP/2
// clients in front. Real TLS, real h2 clients from their own loopback
// addresses, a real HTTPS origin.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import https from 'node:https';
import fs from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { startOrigin, startProxy, request, domain, sleep, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

let pki: TestPki;
let origin: Origin;
let tlsOrigin: https.Server;
let proxy: Proxy;
let port: number;

beforeAll(async () => {
  pki = makePki();
  const a = pki.leaf('a.test');
  const secure = pki.leaf('secure.test');
  origin = await startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end('<p>page</p>'); });
  tlsOrigin = https.createServer({ cert: fs.readFileSync(secure.cert), key: fs.readFileSync(secure.key) }, (_req, res) => res.end('over tls'));
  tlsOrigin.listen(0, '127.0.0.1');
  await once(tlsOrigin, 'listening');
  const tlsAddress = `127.0.0.1:${(tlsOrigin.address() as net.AddressInfo).port}`;
  proxy = await startProxy({
    tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }, { domains: ['secure.test'], ...secure }] },
    filter: { mode: 'always' },
    domains: [
      domain('a.test', [origin.address]),
      // Verified against upstream.caFile (unset here: the system roots): the test CA is not trusted.
      domain('secure.test', [tlsAddress], { upstreamTls: true }),
    ],
  });
  port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
});
afterAll(async () => { await proxy.close(); await origin.close(); tlsOrigin.closeAllConnections(); tlsOrigin.close(); });

function h2session(localAddress: string, servername = 'a.test'): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`https://${servername}:${port}`, { ca: fs.readFileSync(pki.ca), host: '127.0.0.1', servername, localAddress } as http2.SecureClientSessionOptions);
    s.once('remoteSettings', () => resolve(s));
    s.once('error', reject);
  });
}

function h2get(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve) => {
    const r = s.request({ ':path': '/', accept: 'text/html', 'user-agent': 'Mozilla/5.0 test', 'accept-language': 'en', ...headers });
    let data = '';
    let h: http2.IncomingHttpHeaders = {};
    r.on('response', (x) => { h = x; });
    r.on('data', (c) => { data += c; });
    r.on('end', () => resolve({ status: Number(h[':status']), headers: h, body: data }));
    r.on('error', () => resolve({ status: 0, headers: h, body: data }));
    r.end();
  });
}

describe('HTTP/2: the filter, statistics and upstream verification', () => {
  it('a navigation without the trust cookie is challenged on HTTP/2, and passes with the cookie it was given', async () => {
    const s = await h2session('127.0.91.1');
    const first = await h2get(s, {});
    expect(first.status).toBe(302);
    expect(first.headers['x-scrubber']).toBe('challenge');
    const cookie = String(first.headers['set-cookie']).split(';')[0];
    expect(cookie).toMatch(/=/);
    const second = await h2get(s, { cookie });
    expect(second.status).toBe(200);
    expect(second.body).toBe('<p>page</p>');
    s.close();
  });

  it('many streams on one connection count for their one source: a flood of streams gets it banned', async () => {
    const s = await h2session('127.0.91.2');
    const first = await h2get(s, {});
    const cookie = String(first.headers['set-cookie']).split(';')[0];
    // Far beyond any person (rate-extreme): 40 batches of 25 concurrent streams, bounded.
    for (let i = 0; i < 40 && !proxy.app.filter.banOf('127.0.91.2') && !s.closed && !s.destroyed; i++) {
      await Promise.all(Array.from({ length: 25 }, () => h2get(s, { cookie })));
    }
    expect(proxy.app.filter.banOf('127.0.91.2')).toBeDefined();
    s.destroy();
    // And a new connection from it is dropped at accept.
    await expect(h2session('127.0.91.2')).rejects.toBeDefined();
  });

  it('statistics count the HTTP/2 requests of the domain', async () => {
    const before = JSON.parse((await request(`${proxy.adminUrl}/api/stats?domain=a.test`)).body).buckets.reduce((n: number, b: any) => n + b.incoming.requests, 0);
    const s = await h2session('127.0.91.3');
    await Promise.all(Array.from({ length: 7 }, () => h2get(s, {})));
    s.close();
    await sleep(50);
    const after = JSON.parse((await request(`${proxy.adminUrl}/api/stats?domain=a.test`)).body).buckets.reduce((n: number, b: any) => n + b.incoming.requests, 0);
    expect(after - before).toBe(7);
  });

  it('an HTTPS upstream whose certificate the proxy does not trust gets the 502 page, not a request, with an HTTP/2 client in front', async () => {
    const s = await h2session('127.0.91.4', 'secure.test');
    const r = await h2get(s, { ':authority': 'secure.test', accept: 'application/json' });
    expect(r.status).toBe(502);
    expect(r.body).not.toContain('over tls');
    s.close();
  });
});
