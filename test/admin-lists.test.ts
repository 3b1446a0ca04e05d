// The lists through the admin API, refusals that change nothing (SPEC §10):
// a whitelist entry from the config is changed in the config only, not
// overwritten (and then deleted) through the API; a malformed blacklist
// address is refused, not cut short; the whitelist takes only its own body
// fields and answers entries as GET /api/whitelist lists them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, domain, type Proxy } from './helpers/servers.ts';

const TOKEN = 'lists-token';
let proxy: Proxy;

function api(method: string, path: string, body?: string) {
  return fetch(proxy.adminUrl + path, { method, body, headers: { authorization: `Bearer ${TOKEN}` } })
    .then(async (r) => ({ status: r.status, json: await r.json() as Record<string, unknown> }));
}
const whitelist = async () => (await api('GET', '/api/whitelist')).json.entries as { ip: string; origin: string; note: string }[];

beforeAll(async () => {
  proxy = await startProxy({
    admin: { host: '127.0.0.1', port: 0, token: TOKEN },
    domains: [domain('a.test', ['127.0.0.1:1'])],
    filter: { whitelist: ['10.9.0.0/16'] },
  });
});
afterAll(async () => { await proxy?.close(); });

describe('whitelist entries from the config', () => {
  it('PUT on one is refused with 400 naming filter.whitelist, in any spelling of the range; it stays a config entry', async () => {
    for (const spelled of ['10.9.0.0%2F16', '10.9.1.2%2F16']) {
      const r = await api('PUT', `/api/whitelist/${spelled}`, JSON.stringify({ note: 'taken over' }));
      expect(r.status, spelled).toBe(400);
      expect(r.json.error).toMatch(/10\.9\.0\.0\/16 comes from filter\.whitelist in the config/);
    }
    expect(await whitelist()).toEqual([expect.objectContaining({ ip: '10.9.0.0/16', origin: 'config', note: '' })]);
    // And so it cannot be deleted through the API either.
    expect((await api('DELETE', '/api/whitelist/10.9.0.0%2F16')).status).toBe(400);
    expect((await whitelist()).map((e) => e.ip)).toEqual(['10.9.0.0/16']);
  });
});

describe('blacklist addresses', () => {
  it('an address with more after its /64 is refused with 400 naming it, and bans nothing', async () => {
    for (const bad of ['2001:db8::%2F64%2Fjunk', '2001:db8::%2F64%2F', '2001:db8::%2F64%2F64']) {
      const r = await api('PUT', `/api/blacklist/${bad}`, JSON.stringify({ ttlSeconds: 60 }));
      expect(r.status, bad).toBe(400);
      expect(r.json.error).toContain(JSON.stringify(decodeURIComponent(bad)));
    }
    expect((await api('GET', '/api/blacklist/2001:db8::1')).json.listed).toBe(false);
    expect((await api('GET', '/api/blacklist')).json.entries).toEqual([]);
    // The /64 itself is still taken.
    expect((await api('PUT', '/api/blacklist/2001:db8::%2F64', JSON.stringify({ ttlSeconds: 60 }))).json).toMatchObject({ ip: '2001:db8::/64', listed: true });
    expect((await api('DELETE', '/api/blacklist/2001:db8::%2F64')).json).toMatchObject({ removed: true });
  });
});

describe('whitelist bodies and answers', () => {
  it('an unknown body field is refused with 400 naming it, and adds nothing', async () => {
    const r = await api('PUT', '/api/whitelist/10.20.0.0%2F24', JSON.stringify({ note: 'x', ttlSeconds: 60 }));
    expect(r.status).toBe(400);
    expect(r.json.error).toContain('"ttlSeconds"');
    expect((await whitelist()).map((e) => e.ip)).toEqual(['10.9.0.0/16']);
  });

  it('the answer of PUT is the entry as GET lists it, nothing internal', async () => {
    const r = await api('PUT', '/api/whitelist/10.21.0.0%2F24', JSON.stringify({ note: 'office' }));
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ ip: '10.21.0.0/24', origin: 'api', note: 'office', since: expect.any(String) });
    expect((await whitelist()).find((e) => e.ip === '10.21.0.0/24')).toEqual(r.json);
    expect((await api('DELETE', '/api/whitelist/10.21.0.0%2F24')).json).toEqual({ ip: '10.21.0.0/24', removed: true });
  });
});

describe('manual ban time (README: as given, 1 s to 8 h)', () => {
  it('ttlSeconds from 1 to 28800 is taken as given, not clamped; outside it is a 400 that bans nothing', async () => {
    for (const ttl of [1, 28800]) {
      const r = await api('PUT', '/api/blacklist/192.0.2.77', JSON.stringify({ ttlSeconds: ttl }));
      expect(r.status).toBe(200);
      expect(Date.parse(String(r.json.expiresAt)) - Date.parse(String(r.json.since))).toBe(ttl * 1000);
      await api('DELETE', '/api/blacklist/192.0.2.77');
    }
    for (const ttl of [0, 28801, 30000]) {
      const r = await api('PUT', '/api/blacklist/192.0.2.78', JSON.stringify({ ttlSeconds: ttl }));
      expect(r.status, String(ttl)).toBe(400);
      expect(r.json.error).toBe('ttlSeconds must be an integer from 1 to 28800');
    }
    expect((await api('GET', '/api/blacklist/192.0.2.78')).json.listed).toBe(false);
  });
});
