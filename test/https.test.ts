// TLS termination with the certificate chosen by SNI, X-Forwarded-Proto https,
// and HTTPS upstreams with certificate verification on by default.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import fs from 'node:fs';
import { once } from 'node:events';
import type net from 'node:net';
import type tls from 'node:tls';
import { connect as tlsConnect } from 'node:tls';
import { startOrigin, startProxy, request, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

let pki: TestPki;
let origin: Origin;
let tlsOrigin: https.Server;
let tlsOriginAddress: string;
let proxy: Proxy;
let tlsPort: number;
let tlsHandshakes = 0;

beforeAll(async () => {
  pki = makePki();
  const a = pki.leaf('a.test');
  const b = pki.leaf('b.test');
  const secure = pki.leaf('secure.test');
  origin = await startOrigin((req, res) => res.end(String(req.headers['x-forwarded-proto'])));
  tlsOrigin = https.createServer({ cert: fs.readFileSync(secure.cert), key: fs.readFileSync(secure.key) }, (_req, res) => res.end('over tls'));
  tlsOrigin.on('secureConnection', () => { tlsHandshakes++; });
  tlsOrigin.listen(0, '127.0.0.1');
  await once(tlsOrigin, 'listening');
  tlsOriginAddress = `127.0.0.1:${(tlsOrigin.address() as net.AddressInfo).port}`;
  proxy = await startProxy({
    tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }, { domains: ['b.test'], ...b }] },
    upstream: { caFile: pki.ca },
    domains: [
      domain('a.test', [origin.address]), domain('b.test', [origin.address]),
      // Plain HTTP, named by an address nothing listens on: the upstream is what it reaches.
      domain('127.9.9.9', [origin.address]),
      domain('secure.test', [tlsOriginAddress], { upstreamTls: true, aliases: ['www.secure.test'] }),
      // Served over TLS by a server whose certificate does not name this domain.
      domain('mismatch.test', [tlsOriginAddress], { upstreamTls: true }),
    ],
  });
  tlsPort = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
});
afterAll(async () => { await proxy.close(); await origin.close(); tlsOrigin.closeAllConnections(); tlsOrigin.close(); });

function tlsGet(servername: string): Promise<{ body: string; cn: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: tlsPort, servername, path: '/', headers: { host: servername }, ca: fs.readFileSync(pki.ca), agent: false }, (res) => {
      const cn = String((res.socket as tls.TLSSocket).getPeerCertificate().subject?.CN);
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ body, cn }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('TLS termination', () => {
  it('chooses the certificate by SNI and tells the upstream the request came over https', async () => {
    expect(await tlsGet('a.test')).toEqual({ body: 'https', cn: 'a.test' });
    expect(await tlsGet('b.test')).toEqual({ body: 'https', cn: 'b.test' });
  });

  it('a client that sends no SNI (connects by IP address) gets the first certificate, before and after a reload, still with h2 by ALPN', async () => {
    const noSni = () => new Promise<{ cn: string; alpn: string | false | null }>((resolve, reject) => {
      // servername '' : Node's client then sends no server_name extension (as curl and h2load do for an IP address).
      const s = tlsConnect({ port: tlsPort, host: '127.0.0.1', servername: '', rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'] }, () => {
        resolve({ cn: String(s.getPeerCertificate().subject?.CN), alpn: s.alpnProtocol });
        s.destroy();
      });
      s.on('error', reject);
    });
    expect(await noSni()).toEqual({ cn: 'a.test', alpn: 'h2' });
    expect(proxy.app.reload({ ok: true, config: proxy.app.config })).toEqual({ ok: true });
    expect(await noSni()).toEqual({ cn: 'a.test', alpn: 'h2' });
    expect(await tlsGet('b.test')).toEqual({ body: 'https', cn: 'b.test' });
  });

  it('plain HTTP still says http', async () => {
    expect((await request(proxy.url, { headers: { host: 'a.test' } })).body).toBe('http');
  });
});

describe('HTTPS upstreams', () => {
  it('are verified against the configured CA and the domain name', async () => {
    expect((await request(proxy.url, { headers: { host: 'secure.test' } })).body).toBe('over tls');
  });

  it('are reached by the domain\'s name whatever Host the client used (an alias): one name, one verification, and the connections kept', async () => {
    // The upstream's certificate names secure.test only. Before, undici took the SNI (and the name it verifies) from
    // each request's Host, and closed its connection whenever that name changed from one request to the next.
    const before = tlsHandshakes;
    for (let i = 0; i < 8; i++) {
      const r = await request(proxy.url, { headers: { host: i % 2 ? 'www.secure.test' : 'secure.test:80' } });
      expect([r.status, r.body]).toEqual([200, 'over tls']);
    }
    expect(tlsHandshakes - before).toBeLessThanOrEqual(1);
  });

  it('a plain-HTTP domain named by an IP address reaches its upstream, not that address (the HTTPS name stays out of it)', async () => {
    const r = await request(proxy.url, { headers: { host: '127.9.9.9' } });
    expect([r.status, r.body]).toEqual([200, 'http']);
  });

  it('a certificate that does not match is refused (502), not trusted', async () => {
    const r = await request(proxy.url, { headers: { host: 'mismatch.test' } });
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBeDefined();
  });
});
