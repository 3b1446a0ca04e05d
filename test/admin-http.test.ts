// The admin listener as HTTP (SPEC §10), on real sockets: what a browser on
// another site can make it do (nothing: without a token a foreign Origin is
// refused, and a Host that is not this machine, against DNS rebinding; with
// one, the token guards), and the protocol details a client relies on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, request, domain, type Proxy } from './helpers/servers.ts';

const TOKEN = 'http-token';
let open: Proxy;
let guarded: Proxy;

beforeAll(async () => {
  open = await startProxy({ domains: [domain('a.test', ['127.0.0.1:1'])] });
  guarded = await startProxy({ admin: { host: '127.0.0.1', port: 0, token: TOKEN }, domains: [domain('a.test', ['127.0.0.1:1'])] });
});
afterAll(async () => { await open?.close(); await guarded?.close(); });

const call = async (p: Proxy, method: string, path: string, headers: Record<string, string> = {}, body?: string) => {
  const r = await request(p.adminUrl + path, { method, headers, body });
  let json: Record<string, unknown> | null = null;
  try { json = JSON.parse(r.body); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, body: r.body, json };
};
const listed = async (p: Proxy, ip: string, headers: Record<string, string> = {}) => (await call(p, 'GET', `/api/blacklist/${ip}`, headers)).json?.listed;

describe('cross-site requests', () => {
  it('a foreign Origin is refused with 403 naming it, and changes nothing (no token)', async () => {
    const ban = await call(open, 'PUT', '/api/blacklist/203.0.113.5', { origin: 'http://evil.example', 'content-type': 'application/json' }, '{"ttlSeconds":600}');
    expect(ban.status).toBe(403);
    expect(ban.json?.error).toMatch(/Origin http:\/\/evil\.example/);
    expect(await listed(open, '203.0.113.5')).toBe(false);
    const reload = await call(open, 'POST', '/api/reload', { origin: 'http://evil.example' });
    expect(reload.status).toBe(403);
    // "null" (a sandboxed frame, a file: page) is not this listener either.
    expect((await call(open, 'POST', '/api/reload', { origin: 'null' })).status).toBe(403);
  });

  it('the admin\'s own Origin is answered (the dashboard calls the API from it)', async () => {
    const r = await call(open, 'PUT', '/api/blacklist/203.0.113.6', { origin: `http://127.0.0.1:${open.adminPort}`, 'content-type': 'application/json' }, '{"ttlSeconds":600}');
    expect(r.status).toBe(200);
    expect(await listed(open, '203.0.113.6')).toBe(true);
  });

  it('without a token, a Host that is a name other than localhost is refused with 403 naming it (DNS rebinding)', async () => {
    const r = await call(open, 'GET', '/api/blacklist', { host: `rebind.evil.example:${open.adminPort}` });
    expect(r.status).toBe(403);
    expect(r.json?.error).toMatch(/Host rebind\.evil\.example/);
    const ban = await call(open, 'PUT', '/api/blacklist/203.0.113.7', { host: 'rebind.evil.example', origin: 'http://rebind.evil.example', 'content-type': 'application/json' }, '{"ttlSeconds":600}');
    expect(ban.status).toBe(403);
    expect(await listed(open, '203.0.113.7')).toBe(false);
    for (const host of [`localhost:${open.adminPort}`, `127.0.0.1:${open.adminPort}`, `[::1]:${open.adminPort}`, 'LOCALHOST']) {
      expect((await call(open, 'GET', '/api/blacklist', { host })).status, host).toBe(200);
    }
  });

  it('with a token any Host and any Origin are answered: the token is what guards (a page elsewhere cannot send it)', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect((await call(guarded, 'GET', '/api/blacklist', { ...auth, host: 'scrubber-admin.internal' })).status).toBe(200);
    // The dashboard behind a TLS-terminating reverse proxy: the browser's Origin is https://<public name>, the Host
    // that reaches the admin listener is the proxy's upstream address.
    const behind = { ...auth, origin: 'https://admin.example.com', host: `127.0.0.1:${guarded.adminPort}`, 'content-type': 'application/json' };
    expect((await call(guarded, 'PUT', '/api/blacklist/203.0.113.8', behind, '{"ttlSeconds":600}')).status).toBe(200);
    expect(await listed(guarded, '203.0.113.8', auth)).toBe(true);
    // Without the token nothing is done, whatever the Origin.
    expect((await call(guarded, 'PUT', '/api/blacklist/203.0.113.9', { origin: 'http://evil.example', 'content-type': 'application/json' }, '{"ttlSeconds":600}')).status).toBe(401);
    expect(await listed(guarded, '203.0.113.9', auth)).toBe(false);
  });
});

describe('methods', () => {
  it('HEAD is answered as GET without a body (auth as for GET)', async () => {
    const get = await call(open, 'GET', '/healthz');
    const head = await call(open, 'HEAD', '/healthz');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(head.headers['content-type']).toBe(get.headers['content-type']);
    expect(head.headers['content-length']).toBe(get.headers['content-length']);
    const page = await call(open, 'HEAD', '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.body).toBe('');
    expect((await call(guarded, 'HEAD', '/api/blacklist')).status).toBe(401);
    expect((await call(guarded, 'HEAD', '/api/blacklist', { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  it('a method a path does not take gets 405 with Allow listing those it does', async () => {
    const cases: [string, string, string][] = [
      ['OPTIONS', '/api/blacklist', 'GET, HEAD'],
      ['PUT', '/healthz', 'GET, HEAD'],
      ['POST', '/api/blacklist/192.0.2.1', 'GET, PUT, DELETE, HEAD'],
      ['GET', '/api/reload', 'POST'],
    ];
    for (const [method, path, allow] of cases) {
      const r = await call(open, method, path);
      expect(r.status, `${method} ${path}`).toBe(405);
      expect(r.headers.allow, `${method} ${path}`).toBe(allow);
      expect(r.json?.error).toContain(method);
    }
    expect((await call(open, 'OPTIONS', '/nope')).status).toBe(404);
  });
});

describe('the bearer token', () => {
  it('the scheme is case-insensitive (RFC 9110 §11.1); the token is not', async () => {
    for (const h of [`bearer ${TOKEN}`, `BEARER ${TOKEN}`, `Bearer  ${TOKEN}`]) {
      expect((await call(guarded, 'GET', '/api/blacklist', { authorization: h })).status, h).toBe(200);
    }
    for (const h of [`Bearer ${TOKEN.toUpperCase()}`, `Basic ${TOKEN}`, `Bearer${TOKEN}`, TOKEN]) {
      expect((await call(guarded, 'GET', '/api/blacklist', { authorization: h })).status, h).toBe(401);
    }
  });

  it('only the token itself is taken: one of the same length, shorter, longer, empty or none gets 401', async () => {
    expect((await call(guarded, 'GET', '/api/blacklist', { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    const wrong = [TOKEN.slice(0, -1) + 'X', TOKEN.slice(0, -1), TOKEN.slice(1), TOKEN + 'n', `${TOKEN} `.repeat(2).trim(), 'x'.repeat(200), ''];
    for (const t of wrong) expect((await call(guarded, 'GET', '/api/blacklist', { authorization: `Bearer ${t}` })).status, JSON.stringify(t)).toBe(401);
    expect((await call(guarded, 'GET', '/api/blacklist')).status).toBe(401);
  });
});

describe('/api/stats dates', () => {
  it('a day the month does not have is refused with 400 naming the parameter, not read as the next month', async () => {
    // The other end is a valid date near by (a range over 430 days is refused on its own).
    const cases: [string, string, string][] = [
      ['from', '2024-02-30', 'to=2024-03-05'], ['from', '2023-02-29', 'to=2023-03-05'], ['to', '2024-04-31', 'from=2024-04-01'],
      ['from', '2024-02-31T10:00:00Z', 'to=2024-03-05'], ['to', '2024-06-00', 'from=2024-05-01'],
    ];
    for (const [param, value, other] of cases) {
      const r = await call(open, 'GET', `/api/stats?domain=a.test&${param}=${encodeURIComponent(value)}&${other}`);
      expect(r.status, `${param}=${value}`).toBe(400);
      expect(r.json?.error).toMatch(new RegExp(`^${param}: "${value}"`));
    }
    const leap = await call(open, 'GET', '/api/stats?domain=a.test&from=2024-02-29&to=2024-03-01');
    expect(leap.status).toBe(200);
    expect(leap.json).toMatchObject({ from: Date.UTC(2024, 1, 29) / 1000, to: Date.UTC(2024, 2, 1) / 1000 });
  });
});

describe('path parameters', () => {
  it('a parameter that is not valid percent-encoding gets 400 naming it (not 404 "not found"), and changes nothing', async () => {
    // A CIDR typed with its "/" half-encoded, an unencoded IPv6 zone: the route exists, the value is what is wrong.
    const cases: [string, string, string][] = [
      ['PUT', '/api/whitelist/10.9.0.0%2', 'entry'],
      ['DELETE', '/api/whitelist/10.9.0.0%2', 'entry'],
      ['PUT', '/api/blacklist/203.0.113.44%', 'ip'],
      ['GET', '/api/blacklist/fe80::1%eth0', 'ip'],
    ];
    for (const [method, path, param] of cases) {
      const r = await call(open, method, path, { 'content-type': 'application/json' }, method === 'PUT' ? '{}' : undefined);
      expect(r.status, `${method} ${path}`).toBe(400);
      expect(r.json?.error, `${method} ${path}`).toMatch(new RegExp(`^${param}: `));
    }
    expect(JSON.stringify((await call(open, 'GET', '/api/whitelist')).json)).not.toContain('10.9.');
    expect(await listed(open, '203.0.113.44')).toBe(false);
    // Still: no auth, no answer but 401 (the parameter is not looked at first).
    expect((await call(guarded, 'PUT', '/api/whitelist/10.9.0.0%2')).status).toBe(401);
  });
});
