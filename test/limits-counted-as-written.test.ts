// Limits counted as a person writes them, with a real proxy in-process, a
// real origin and raw sockets. Both failed on the code before 2026-11-29:
// - limits.maxHeaderBytes was only Node's parser limit, which leaves out the
//   request line's separators and every ": " and line end, so a head some
//   bytes over the limit passed (1,044 of 1,024); now counted as written (the
//   blanks around a value, which the parser drops, still are not);
// - a manual ban's reason (and a whitelist note) of up to 500 characters was
//   measured in UTF-16 units: 300 emoji were refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, rawExchange, domain, statusOf, type Origin, type Proxy } from './helpers/servers.ts';

const HOST = 'site.test';
let origin: Origin;
let proxy: Proxy;
beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    req.resume();
    req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
  });
  proxy = await startProxy({
    limits: { maxHeaderBytes: 1024, maxHeaderCount: 20 },
    domains: [domain(HOST, [origin.address])],
  });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

function api(method: string, path: string, body?: string) {
  return fetch(proxy.adminUrl + path, { method, body }).then(async (r) => ({ status: r.status, json: await r.json() as Record<string, unknown> }));
}

describe('limits.maxHeaderBytes, counted as written', () => {
  it('an ordinary head a few bytes over maxHeaderBytes (1030 of 1024) gets 431', async () => {
    const pre = `GET /near HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n`;
    const lines: string[] = [];
    for (let i = 0; i < 10; i++) lines.push(`X-Field-${i}: ${'a'.repeat(60)}\r\n`);
    let head = pre + lines.join('');
    head += `X-Last: ${'b'.repeat(1030 - head.length - 'X-Last: '.length - 4)}\r\n\r\n`;
    expect(head.length).toBe(1030);
    const r = await rawExchange(proxy.port, head, { timeoutMs: 3000, localAddress: '127.0.72.2' });
    expect(statusOf(r.text)).toBe(431);
    expect(origin.seen.some((s) => s.url === '/near')).toBe(false);
  });
});

describe('PUT /api/blacklist/{ip}: a reason of up to 500 characters', () => {
  it('a reason of 300 characters (emoji, outside the BMP) is taken, and listed as given', async () => {
    const reason = '😀'.repeat(300);
    expect([...reason].length).toBe(300);
    const r = await api('PUT', '/api/blacklist/10.72.0.1', JSON.stringify({ ttlSeconds: 60, reason }));
    expect(r.status).toBe(200);
    expect((await api('GET', '/api/blacklist/10.72.0.1')).json).toMatchObject({ listed: true, reason });
    await api('DELETE', '/api/blacklist/10.72.0.1');
  });
});
