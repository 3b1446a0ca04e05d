// A whitelist change reaches a source the proxy has already seen (issue 12,
// the surviving mutation): sources cache their whitelist verdict per list
// version, so an entry added through the admin API after a source has sent
// traffic must protect it from then on, and removing the entry must make the
// same source bannable again. Bans come from a real flood in mode always.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startOrigin, startProxy, domain, type Origin, type Proxy } from './helpers/servers.ts';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';

const HOST = 'api.test';
const TOKEN = 'whitelist-change-token';
const UA = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0', accept: '*/*', 'accept-language': 'en' };

function get(port: number, local: string, agent?: http.Agent): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/api/items', localAddress: agent ? undefined : local, agent: agent ?? false, headers: { host: HOST, ...UA } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(3000, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Requests from `local` until it is banned or `max` were sent; how many were sent. */
async function flood(port: number, local: string, f: ScrubberFilter, max: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: local });
  let n = 0;
  const worker = async () => { while (n < max && !f.banOf(local)) { n++; await get(port, local, agent); } };
  await Promise.all([worker(), worker(), worker(), worker()]);
  agent.destroy();
  return n;
}

function admin(p: Proxy, method: string, path: string) {
  return fetch(p.adminUrl + path, { method, headers: { authorization: `Bearer ${TOKEN}` } })
    .then(async (r) => ({ status: r.status, json: await r.json() as Record<string, unknown> }));
}

describe('a whitelist change reaches sources already seen', () => {
  let origin: Origin;
  let proxy: Proxy;
  let f: ScrubberFilter;
  beforeAll(async () => {
    origin = await startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}'); });
    proxy = await startProxy({
      admin: { host: '127.0.0.1', port: 0, token: TOKEN },
      domains: [domain(HOST, [origin.address])],
      filter: { mode: 'always', challenge: { enabled: false } },
    });
    f = proxy.app.filter as ScrubberFilter;
  });
  afterAll(async () => { await proxy?.close(); await origin?.close(); });

  it('the flood bans a source that is not listed (the control)', async () => {
    await flood(proxy.port, '127.0.18.9', f, 1500);
    expect(f.banOf('127.0.18.9')).toBeDefined();
  });

  it('whitelisted after it has sent traffic: never banned; removed again: banned by the same flood', async () => {
    const ip = '127.0.18.1';
    // Seen first, so that the filter holds (and caches) a verdict for it.
    for (let i = 0; i < 5; i++) expect(await get(proxy.port, ip)).toBe(200);

    expect((await admin(proxy, 'PUT', `/api/whitelist/${ip}`)).status).toBe(200);
    expect(await flood(proxy.port, ip, f, 1500)).toBe(1500);
    expect(f.banOf(ip)).toBeUndefined();
    expect((await admin(proxy, 'GET', `/api/blacklist/${ip}`)).json).toMatchObject({ listed: false });

    expect((await admin(proxy, 'DELETE', `/api/whitelist/${ip}`)).json).toMatchObject({ removed: true });
    await flood(proxy.port, ip, f, 1500);
    expect(f.banOf(ip)).toBeDefined();
    expect((await admin(proxy, 'GET', `/api/blacklist/${ip}`)).json).toMatchObject({ listed: true });
  });
});
