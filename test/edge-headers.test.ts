// X-Forwarded-*, Via and hop-by-hop handling, both ways, through real sockets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, request, rawExchange, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { toUpstreamHeaders, toClientHeaders, clientAddress } from '../src/upstream/headers.ts';

let origin: Origin;
let proxy: Proxy;

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    const body = JSON.stringify({ headers: req.headers, raw: req.rawHeaders, url: req.url });
    res.writeHead(200, {
      'content-type': 'application/json', 'content-length': Buffer.byteLength(body),
      connection: 'keep-alive, x-upstream-secret', 'x-upstream-secret': 'hop', 'keep-alive': 'timeout=5',
      'proxy-authenticate': 'Basic', 'set-cookie': ['a=1', 'b=2'], via: '1.0 app',
    });
    res.end(body);
  });
  proxy = await startProxy({ domains: [domain('site.test', [origin.address], { aliases: ['www.site.test'] })] });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

describe('request headers to the upstream', () => {
  it('appends the client address to X-Forwarded-For and sets -Proto, -Host and Via', async () => {
    const r = await request(proxy.url + '/a?b=1', { headers: { host: 'WWW.Site.Test:8080', 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil' }, localAddress: '127.0.0.9' });
    expect(r.status).toBe(200);
    const seen = JSON.parse(r.body);
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.9');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe('www.site.test');
    expect(seen.headers.via).toBe('1.1 scrubber');
    expect(seen.headers.host).toBe('WWW.Site.Test:8080');
    expect(seen.url).toBe('/a?b=1');
  });

  it('joins several X-Forwarded-For lines before appending', async () => {
    const res = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nConnection: close\r\n\r\n', { localAddress: '127.0.0.10' });
    const seen = JSON.parse(res.text.slice(res.text.indexOf('\r\n\r\n') + 4));
    expect(seen.headers['x-forwarded-for']).toBe('1.1.1.1, 2.2.2.2, 127.0.0.10');
  });

  it('strips hop-by-hop headers and the ones named in Connection', async () => {
    const res = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: site.test\r\nConnection: keep-alive, X-Client-Secret\r\nX-Client-Secret: s\r\nKeep-Alive: 300\r\nProxy-Authorization: Basic x\r\nTE: trailers\r\nUpgrade-Insecure-Requests: 1\r\nX-Kept: yes\r\n\r\n', { timeoutMs: 1000 });
    const seen = JSON.parse(res.text.slice(res.text.indexOf('\r\n\r\n') + 4, res.text.lastIndexOf('}') + 1));
    for (const h of ['x-client-secret', 'keep-alive', 'proxy-authorization', 'te']) expect(seen.headers[h]).toBeUndefined();
    expect(seen.headers['x-kept']).toBe('yes');
    expect(seen.headers['upgrade-insecure-requests']).toBe('1');
  });
});

describe('response headers to the client', () => {
  it('strips hop-by-hop headers, keeps duplicates, and adds Via', async () => {
    const r = await request(proxy.url + '/', { headers: { host: 'site.test' } });
    expect(r.headers['x-upstream-secret']).toBeUndefined();
    expect(r.headers['proxy-authenticate']).toBeUndefined();
    expect(r.headers['keep-alive']).toBeUndefined();
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(r.headers.via).toBe('1.0 app, 1.1 scrubber');
    expect(r.headers['x-scrubber']).toBeUndefined();
  });
});

describe('IPv4-mapped IPv6 clients', () => {
  it('are written as plain IPv4 in X-Forwarded-For', async () => {
    // A dual-stack listener bound to the mapped loopback address sees IPv4 peers as ::ffff:127.x.
    const p = await startProxy({ listen: [{ host: '::ffff:127.0.0.1', port: 0 }], domains: [domain('site.test', [origin.address])] });
    try {
      const r = await request(`http://127.0.0.1:${p.port}/`, { headers: { host: 'site.test' }, localAddress: '127.0.0.11' });
      expect(JSON.parse(r.body).headers['x-forwarded-for']).toBe('127.0.0.11');
    } finally { await p.close(); }
  });
});

describe('pure header functions', () => {
  it('clientAddress unwraps mapped addresses only', () => {
    expect(clientAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(clientAddress('2001:db8::1')).toBe('2001:db8::1');
  });
  it('toUpstreamHeaders keeps order and duplicates of ordinary headers', () => {
    const out = toUpstreamHeaders(['Host', 'a', 'Cookie', 'x=1', 'Cookie', 'y=2', 'Transfer-Encoding', 'chunked'], { client: '1.2.3.4', proto: 'https', host: 'a' });
    expect(out.slice(0, 6)).toEqual(['Host', 'a', 'Cookie', 'x=1', 'Cookie', 'y=2']);
    expect(out).not.toContain('Transfer-Encoding');
  });
  it('toClientHeaders drops what Connection names', () => {
    const out = toClientHeaders({ connection: 'x-a', 'x-a': '1', 'x-b': '2' });
    expect(out).toEqual({ 'x-b': '2', via: '1.1 scrubber' });
  });
});

