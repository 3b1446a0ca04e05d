// Admin request bodies over 1 MiB (issue 12, item 8): a 413 with a JSON
// {"error"} on the real admin socket, not a connection reset, and nothing
// changed (no ban, no whitelist entry, no reload). A body within the limit
// still works on the same route.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { startProxy, domain, type Proxy } from './helpers/servers.ts';

const TOKEN = 'body-limit-token';
const MIB = 1024 * 1024;

/** One request with node:http; chunked when `chunked`, else with Content-Length. */
function send(p: Proxy, method: string, path: string, body: string, chunked = false): Promise<{ status: number; json: Record<string, unknown> | null; error?: string }> {
  return new Promise((resolve) => {
    const req = http.request(p.adminUrl + path, { method, agent: false, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => { let json = null; try { json = JSON.parse(text); } catch { /* not JSON */ } resolve({ status: res.statusCode ?? 0, json }); });
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, json: null, error: e.code }));
    req.setTimeout(10_000, () => req.destroy());
    if (chunked) { for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.slice(i, i + 64 * 1024)); req.end(); } else req.end(body);
  });
}

describe('admin bodies over 1 MiB', () => {
  let proxy: Proxy;
  beforeAll(async () => {
    proxy = await startProxy({ admin: { host: '127.0.0.1', port: 0, token: TOKEN }, domains: [domain('a.test', ['127.0.0.1:1'])] });
  });
  afterAll(async () => { await proxy?.close(); });

  const big = JSON.stringify({ reason: 'x'.repeat(MIB + 10) });

  it('a ban with a body over 1 MiB gets 413 {"error"} and bans nothing (Content-Length and chunked)', async () => {
    for (const chunked of [false, true]) {
      const r = await send(proxy, 'PUT', '/api/blacklist/10.9.8.7', big, chunked);
      expect(r.error, `chunked=${chunked}`).toBeUndefined();
      expect(r.status).toBe(413);
      expect(typeof r.json?.error).toBe('string');
    }
    expect((await send(proxy, 'GET', '/api/blacklist/10.9.8.7', '')).json?.listed).toBe(false);
  });

  it('a whitelist entry and a reload with an oversized body change nothing', async () => {
    const w = await send(proxy, 'PUT', '/api/whitelist/10.9.8.0%2F24', JSON.stringify({ note: 'y'.repeat(2 * MIB) }));
    expect(w.status).toBe(413);
    const list = (await send(proxy, 'GET', '/api/whitelist', '')).json?.entries as { ip: string }[];
    expect(list.some((e) => e.ip === '10.9.8.0/24')).toBe(false);
    // The reload route reads no body; a config that would change cannot ride in with a huge one.
    const reload = await send(proxy, 'POST', '/api/reload', 'z'.repeat(MIB + 1));
    expect(reload.status).toBe(413);
  });

  it('a body of exactly 1 MiB is still read', async () => {
    const body = JSON.stringify({ reason: 'r' });
    const exact = body + ' '.repeat(MIB - body.length);
    const r = await send(proxy, 'PUT', '/api/blacklist/10.9.8.6', exact);
    expect(r.status).toBe(200);
    expect((await send(proxy, 'GET', '/api/blacklist/10.9.8.6', '')).json?.listed).toBe(true);
  });

  it('a declared Content-Length over the limit is answered 413 at once, before the body is sent (and bans nothing)', async () => {
    for (const declared of [2 * MIB, 100 * MIB]) {
      const s = net.connect(proxy.adminPort, '127.0.0.1');
      s.on('error', () => {});
      let text = '';
      s.on('data', (d) => { text += d; });
      s.write(`PUT /api/blacklist/10.9.8.5 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${declared}\r\n\r\n{"reason":`);
      const t0 = Date.now();
      while (!text.includes('}') && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 20));
      s.destroy();
      expect(text, `declared ${declared}`).toMatch(/^HTTP\/1\.1 413 /);
      expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).error).toBe(`body too large: at most ${MIB} bytes`);
    }
    expect((await send(proxy, 'GET', '/api/blacklist/10.9.8.5', '')).json?.listed).toBe(false);
  });

  it('after that early 413, the rest of the body (if sent) is read and dropped, and the connection takes the next request', async () => {
    const s = net.connect(proxy.adminPort, '127.0.0.1');
    s.on('error', () => {});
    let text = '';
    s.on('data', (d) => { text += d; });
    s.write(`PUT /api/blacklist/10.9.8.4 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: ${2 * MIB}\r\n\r\n`);
    s.write(Buffer.alloc(2 * MIB, 0x61));
    s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const t0 = Date.now();
    while (!text.includes('"status"') && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
    s.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 413 [\s\S]*HTTP\/1\.1 200 [\s\S]*\{"status":"ok"\}$/);
  });
});
