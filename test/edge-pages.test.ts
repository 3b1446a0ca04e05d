// The proxy's own pages: brand and status, X-Scrubber, drop-in overrides per
// domain without a restart, maintenance as 503 + Retry-After or a 302.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startOrigin, startProxy, request, freePort, tempDir, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { Pages } from '../src/respond/pages.ts';

let origin: Origin;
let proxy: Proxy;
let pagesDir: string;
let deadPort: number;

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    // The application's own error pages must reach the client untouched.
    const status = Number(req.url?.slice(1)) || 200;
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(`app says ${status}`);
  });
  deadPort = await freePort();
  pagesDir = tempDir('scrubber-pages-');
  fs.cpSync(path.resolve('errors-pages'), pagesDir, { recursive: true });
  proxy = await startProxy({
    pages: { dir: pagesDir, brand: 'QRATOR' },
    domains: [
      domain('site.test', [origin.address]),
      domain('down.test', [`127.0.0.1:${deadPort}`]),
      domain('other-down.test', [`127.0.0.1:${deadPort}`]),
      domain('opt.test', [origin.address], { proxyErrorPages: true }),
      domain('maint.test', [origin.address], { maintenance: { enabled: true, redirect: null, retryAfterSeconds: 120 } }),
      domain('moved.test', [origin.address], { maintenance: { enabled: true, redirect: 'https://status.example.org/' } }),
    ],
  });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

const get = (host: string, p = '/') => request(proxy.url + p, { headers: { host } });

describe('proxy-generated pages', () => {
  it('502 names the brand and the status and carries X-Scrubber', async () => {
    const r = await get('down.test');
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBe('connect-refused');
    expect(r.body).toContain('HTTP QRATOR 502');
  });

  it('unknown Host gets 421 and is never forwarded; malformed Host gets 400', async () => {
    const before = origin.seen.length;
    const a = await get('nobody.test');
    expect(a.status).toBe(421);
    expect(a.headers['x-scrubber']).toBe('unknown-host');
    const b = await get('bad host!');
    expect(b.status).toBe(400);
    expect(origin.seen.length).toBe(before);
  });

  it('the application\'s own 403/500/503 pages are relayed as they are', async () => {
    for (const s of [403, 500, 503]) {
      const r = await get('site.test', `/${s}`);
      expect(r.status).toBe(s);
      expect(r.body).toBe(`app says ${s}`);
      expect(r.headers['x-scrubber']).toBeUndefined();
    }
  });

  it('a domain that opts in (proxyErrorPages) gets the proxy\'s 502/503/504 pages instead of the application\'s; other statuses pass', async () => {
    for (const s of [502, 503, 504]) {
      const r = await get('opt.test', `/${s}`);
      expect(r.status).toBe(s);
      expect(r.headers['x-scrubber']).toBe('upstream-page');
      expect(r.body).toContain(`HTTP QRATOR ${s}`);
    }
    for (const s of [403, 500]) {
      const r = await get('opt.test', `/${s}`);
      expect(r.body).toBe(`app says ${s}`);
      expect(r.headers['x-scrubber']).toBeUndefined();
    }
  });

  it('a page dropped into errors-pages/<domain>/ is served from the next request on, for that domain only', async () => {
    fs.mkdirSync(path.join(pagesDir, 'down.test'), { recursive: true });
    fs.writeFileSync(path.join(pagesDir, 'down.test', '502.html'), '<h1>Custom {{brand}} {{status}} for down.test</h1>');
    const r = await get('down.test');
    expect(r.body).toBe('<h1>Custom QRATOR 502 for down.test</h1>');
    expect(r.headers['x-scrubber']).toBe('connect-refused');
    const other = await get('other-down.test');
    expect(other.body).toContain('HTTP QRATOR 502');
    expect(other.body).not.toContain('Custom');
    fs.writeFileSync(path.join(pagesDir, '502.html'), 'default changed {{status}}');
    expect((await get('other-down.test')).body).toBe('default changed 502');
  });

  it('falls back to a built-in page when the folder has no file', async () => {
    fs.rmSync(path.join(pagesDir, '502.html'));
    const r = await get('other-down.test');
    expect(r.status).toBe(502);
    expect(r.body).toContain('HTTP QRATOR 502');
  });

  it('the cookies-needed page (a challenge answered without the cookie) is shipped, and built in when the folder has none', async () => {
    const shipped = await new Pages(path.resolve('errors-pages'), 'QRATOR').render(503, 'challenge', null, 'cookies-needed');
    expect(shipped).toMatch(/allow cookies/i);
    const builtin = await new Pages(tempDir('scrubber-nopages-'), 'QRATOR').render(503, 'challenge', 'site.test', 'cookies-needed');
    expect(builtin).toContain('HTTP QRATOR 503');
    expect(builtin).toMatch(/allow cookies/i);
    expect(builtin).toContain('<a href="">try again</a>');
  });
});

describe('maintenance', () => {
  it('answers 503 with the maintenance page and Retry-After, without touching the upstream', async () => {
    const before = origin.seen.length;
    const r = await get('maint.test');
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('120');
    expect(r.headers['x-scrubber']).toBe('maintenance');
    expect(r.body).toContain('maintenance');
    expect(origin.seen.length).toBe(before);
  });

  it('or redirects (302) to maintenance.redirect', async () => {
    const r = await get('moved.test', '/any/path');
    expect(r.status).toBe(302);
    expect(r.headers.location).toBe('https://status.example.org/');
    expect(r.headers['x-scrubber']).toBe('maintenance');
  });

  it('a per-domain maintenance page overrides the default', async () => {
    fs.mkdirSync(path.join(pagesDir, 'maint.test'), { recursive: true });
    fs.writeFileSync(path.join(pagesDir, 'maint.test', 'maintenance.html'), 'back at noon');
    expect((await get('maint.test')).body).toBe('back at noon');
  });
});
