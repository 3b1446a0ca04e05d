// The challenge policy on real sockets: with the filter in `always` mode (every
// untrusted source is challenged), only browser navigations get the cookie
// round trip by default. A cookie-less JSON client is served, never sent a 302
// it cannot follow, and is not banned for ignoring challenges it never got; a
// per-domain policy can exempt a path (a mobile app) or challenge more.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, domain, request, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin;
let proxy: Proxy;
const json = { accept: 'application/json', 'user-agent': 'okhttp/4.12.0' };
const page = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0', 'accept-language': 'en' };

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    res.writeHead(200, { 'content-type': req.url?.startsWith('/api/') ? 'application/json' : 'text/html' });
    res.end(req.url?.startsWith('/api/') ? '{"ok":true}' : '<p>hi</p>');
  });
  proxy = await startProxy({
    filter: { mode: 'always' },
    domains: [
      domain('site.test', [origin.address]),
      domain('app.test', [origin.address], { challengePolicy: [{ path: '/app/', userAgent: '^MyShopApp/', action: 'exempt' }, { path: '/private/', action: 'challenge' }] }),
    ],
  });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

const get = (host: string, path: string, headers: Record<string, string>, localAddress: string) =>
  request(`${proxy.url}${path}`, { headers: { host, ...headers }, localAddress });

describe('challenge policy', () => {
  it('by default a browser navigation is challenged; a JSON API call from a cookie-less client is served, again and again', async () => {
    expect((await get('site.test', '/', page, '127.0.80.1')).status).toBe(302);
    for (let i = 0; i < 20; i++) {
      const r = await get('site.test', `/api/items/${i}`, json, '127.0.80.2');
      expect(r.status).toBe(200);
      expect(r.headers['x-scrubber']).toBeUndefined();
    }
    expect(proxy.app.filter.banOf('127.0.80.2')).toBeUndefined();
    // curl's default Accept (*/*) is not a navigation either.
    expect((await get('site.test', '/', { accept: '*/*', 'user-agent': 'curl/8.5.0' }, '127.0.80.3')).status).toBe(200);
  });

  it('a domain policy exempts its app by path and User-Agent, and challenges what it names', async () => {
    expect((await get('app.test', '/app/home', { ...page, 'user-agent': 'MyShopApp/3.1 (Android)' }, '127.0.80.4')).status).toBe(200);
    expect((await get('app.test', '/app/home', page, '127.0.80.5')).status).toBe(302);
    expect((await get('app.test', '/private/data', json, '127.0.80.6')).status).toBe(302);
  });
});
