// HTTP/2 by ALPN on the TLS listener (tls.http2, default true), next to
// HTTP/1.1 on the same port; upstreams stay HTTP/1.1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http2 from 'node:http2';
import fs from 'node:fs';
import tls from 'node:tls';
import net from 'node:net';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { asHttp1Head } from '../src/listen/h2.ts';
import { startOrigin, startProxy, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

let pki: TestPki;
let origin: Origin;
let proxy: Proxy;
let port: number;

beforeAll(async () => {
  pki = makePki();
  const a = pki.leaf('a.test');
  origin = await startOrigin((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, proto: req.headers['x-forwarded-proto'], xff: req.headers['x-forwarded-for'], version: req.httpVersion, body, pseudo: req.rawHeaders.filter((h, i) => i % 2 === 0 && h.startsWith(':')) })));
  });
  // Upgrades (WebSocket) are HTTP/1.1 only: they must still work on the h2-capable listener.
  origin.server.on('upgrade', (_req, socket: net.Socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n');
    socket.pipe(socket);
  });
  proxy = await startProxy({
    tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }] },
    limits: { maxBodyBytes: 1000 },
    domains: [domain('a.test', [origin.address])],
  });
  port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
});
afterAll(async () => { await proxy.close(); await origin.close(); });

function curl(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = execFile('curl', ['-sS', '--cacert', pki.ca, '--resolve', `a.test:${port}:127.0.0.1`, ...args], { timeout: 10000 }, (_e, stdout, stderr) => resolve({ stdout, stderr }));
    c.stdin?.end();
  });
}

function h2session(localAddress?: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`https://a.test:${port}`, { ca: fs.readFileSync(pki.ca), host: '127.0.0.1', servername: 'a.test', localAddress } as http2.SecureClientSessionOptions);
    s.once('remoteSettings', () => resolve(s));
    s.once('error', reject);
  });
}

function h2req(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const r = s.request(headers);
    let data = '';
    let h: http2.IncomingHttpHeaders = {};
    r.on('response', (x) => { h = x; });
    r.on('data', (c) => { data += c; });
    r.on('end', () => resolve({ status: Number(h[':status']), headers: h, body: data }));
    r.on('error', reject);
    r.end(body);
  });
}

describe('HTTP/2 by ALPN', () => {
  it('curl --http2 speaks h2 and is forwarded over HTTP/1.1', async () => {
    const r = await curl('--http2', '-w', '\\n%{http_version}', `https://a.test:${port}/p?q=1`);
    expect(r.stderr).toBe('');
    const [json, version] = r.stdout.split('\n');
    expect(version).toBe('2');
    expect(JSON.parse(json)).toMatchObject({ method: 'GET', url: '/p?q=1', host: `a.test:${port}`, proto: 'https', xff: '127.0.0.1', version: '1.1', pseudo: [] });
  });

  it('curl --http1.1 still gets HTTP/1.1 on the same port', async () => {
    const r = await curl('--http1.1', '-w', '\\n%{http_version}', `https://a.test:${port}/`);
    const [json, version] = r.stdout.split('\n');
    expect(version).toBe('1.1');
    expect(JSON.parse(json)).toMatchObject({ host: `a.test:${port}`, proto: 'https' });
  });

  it('many streams on one connection, with bodies, each forwarded', async () => {
    const s = await h2session('127.0.5.1');
    // As many as its source may have in flight (limits.maxInflightPerSource, 24 by default): the client holds back the rest.
    expect(s.remoteSettings.maxConcurrentStreams).toBe(24);
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => h2req(s, { ':method': 'POST', ':path': `/n/${i}`, 'content-type': 'text/plain' }, `body ${i}`)));
    rs.forEach((r, i) => {
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ method: 'POST', url: `/n/${i}`, host: `a.test:${port}`, body: `body ${i}`, xff: '127.0.5.1' });
    });
    s.close();
  });

  it('proxy answers (421 unknown host, 413 too large) work on HTTP/2', async () => {
    const s = await h2session();
    const unknown = await h2req(s, { ':path': '/', ':authority': 'nope.test' });
    expect(unknown.status).toBe(421);
    expect(unknown.headers['x-scrubber']).toBeDefined();
    const big = await h2req(s, { ':method': 'POST', ':path': '/', 'content-length': '5000' }, 'x'.repeat(5000));
    expect(big.status).toBe(413);
    s.close();
  });

  it('routes by :authority; a Host that names another site than :authority is refused (400), one that agrees passes', async () => {
    const s = await h2session();
    const routed = await h2req(s, { ':path': '/r', ':authority': `a.test:${port}` });
    expect(JSON.parse(routed.body)).toMatchObject({ url: '/r', host: `a.test:${port}` });
    const other = await h2req(s, { ':path': '/', ':authority': 'a.test', host: 'nope.test' });
    expect(other.status).toBe(400);
    expect(other.headers['x-scrubber']).toBe('bad-request');
    const same = await h2req(s, { ':path': '/', ':authority': 'a.test', host: 'A.test' });
    expect(same.status).toBe(200);
    s.close();
  });

  it('cookie crumbs (browsers send each cookie as its own field on HTTP/2) reach the HTTP/1.1 upstream as one Cookie line (RFC 9113 §8.2.3)', async () => {
    const s = await h2session();
    const r = await h2req(s, { ':path': '/cookies', cookie: ['a=1', 'b=2', 'c=3'], 'x-after': 'z' });
    expect(r.status).toBe(200);
    const raw = origin.seen.find((x) => x.url === '/cookies')!.rawHeaders;
    const cookies = raw.flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() === 'cookie' ? [raw[i + 1]] : []));
    expect(cookies).toEqual(['a=1; b=2; c=3']);
    expect(raw).toContain('x-after');
    s.close();
  });

  it('CONNECT on HTTP/2 is refused with a 405 (as on HTTP/1.1), never a 200 whose body is an HTTP/1.1 answer', async () => {
    const s = await h2session();
    const before = origin.seen.length;
    const r = await h2req(s, { ':method': 'CONNECT', ':authority': 'a.test:443' });
    expect(r.status).toBe(405);
    expect(r.headers['x-scrubber']).toBe('method-not-allowed');
    expect(r.body).toBe('');
    expect(origin.seen.length).toBe(before);
    // The connection is still good for other streams.
    expect((await h2req(s, { ':path': '/after-connect' })).status).toBe(200);
    s.close();
  });
});

describe('HTTP/1.1 on the h2-capable listener', () => {
  it('an Upgrade over TLS (HTTP/1.1) is still tunnelled', async () => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca: fs.readFileSync(pki.ca), ALPNProtocols: ['http/1.1'] });
    await once(s, 'secureConnect');
    s.write('GET /ws HTTP/1.1\r\nhost: a.test\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    let got = '';
    s.on('data', (c) => { got += c; if (got.includes('\r\n\r\n') && !got.includes('ping')) s.write('ping'); });
    await new Promise<void>((r, j) => { const t = setTimeout(() => j(new Error('no echo: ' + got)), 3000); s.on('data', () => { if (got.endsWith('ping')) { clearTimeout(t); r(); } }); });
    expect(got).toMatch(/^HTTP\/1.1 101/);
    s.destroy();
  });
});

describe('Expect: 100-continue over TLS (limits.maxBodyBytes 1000)', () => {
  /** Writes a head over TLS (HTTP/1.1 by ALPN) and reads the first response head. */
  async function h1First(head: string): Promise<{ s: tls.TLSSocket; first: string }> {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca: fs.readFileSync(pki.ca), ALPNProtocols: ['http/1.1'] });
    s.on('error', () => {});
    await once(s, 'secureConnect');
    s.write(head);
    let first = '';
    await new Promise<void>((r) => { const t = setTimeout(r, 3000); s.on('data', (c) => { first += c; if (first.includes('\r\n\r\n')) { clearTimeout(t); r(); } }); });
    return { s, first };
  }

  it('HTTP/1.1: an oversized Content-Length gets 413, not 100; a small one gets 100 and the upstream\'s answer', async () => {
    const before = origin.seen.length;
    const big = await h1First('POST /big HTTP/1.1\r\nhost: a.test\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n');
    expect(big.first).toMatch(/^HTTP\/1\.1 413 /);
    big.s.destroy();
    expect(origin.seen.length).toBe(before);
    const small = await h1First('POST /small HTTP/1.1\r\nhost: a.test\r\ncontent-length: 3\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n');
    expect(small.first).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    let rest = '';
    small.s.on('data', (c) => { rest += c; });
    small.s.write('abc');
    await once(small.s, 'close');
    expect(rest).toMatch(/^HTTP\/1\.1 200 /);
    expect(JSON.parse(rest.slice(rest.indexOf('\r\n\r\n') + 4))).toMatchObject({ url: '/small', body: 'abc' });
  });

  it('HTTP/2: an oversized content-length gets 413 with no 100; a small one gets 100, then the upstream\'s answer', async () => {
    const s = await h2session();
    const before = origin.seen.length;
    const ask = (path: string, length: number) => {
      const r = s.request({ ':method': 'POST', ':path': path, 'content-length': String(length), expect: '100-continue' });
      let continued = false;
      r.on('continue', () => { continued = true; r.end('x'.repeat(length)); });
      return new Promise<{ status: number; continued: boolean; body: string }>((resolve, reject) => {
        let status = 0, body = '';
        r.on('response', (h) => { status = Number(h[':status']); });
        r.on('data', (c) => { body += c; });
        r.on('end', () => resolve({ status, continued, body }));
        r.on('close', () => resolve({ status, continued, body }));
        r.on('error', reject);
      });
    };
    const big = await ask('/big2', 5000);
    expect(big).toMatchObject({ status: 413, continued: false });
    expect(origin.seen.length).toBe(before);
    const small = await ask('/small2', 4);
    expect(small).toMatchObject({ status: 200, continued: true });
    expect(JSON.parse(small.body)).toMatchObject({ url: '/small2', body: 'xxxx' });
    s.close();
  });
});

describe('the HTTP/2 request shim', () => {
  it('req.socket.destroy() ends the stream\'s connection instead of throwing; the socket says encrypted', async () => {
    const a = pki.leaf('shim.test');
    let seen: { encrypted: boolean; threw: boolean; host?: string; raw?: string[] } | null = null;
    const server = http2.createSecureServer({ cert: fs.readFileSync(a.cert), key: fs.readFileSync(a.key) }, (req) => {
      const r = asHttp1Head(req);
      let threw = false;
      const encrypted = 'encrypted' in r.socket;
      try { r.socket.destroy(); } catch { threw = true; }
      seen = { encrypted, threw, host: r.headers.host, raw: r.rawHeaders };
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = http2.connect(`https://127.0.0.1:${(server.address() as net.AddressInfo).port}`, { ca: fs.readFileSync(pki.ca), servername: 'shim.test' } as http2.SecureClientSessionOptions);
    c.on('error', () => {});
    const req = c.request({ ':path': '/x', ':authority': 'shim.test', 'x-a': '1' });
    req.on('error', () => {});
    req.end();
    await once(c, 'close');
    server.close();
    expect(seen).toEqual({ encrypted: true, threw: false, host: 'shim.test', raw: ['host', 'shim.test', 'x-a', '1'] });
  });
});
