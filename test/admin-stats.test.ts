// The statistics side of the admin API on real sockets: traffic through the
// proxy shows in /api/stats, /api/billing and /metrics; the probe reports one
// reachable and one refused upstream; bad input gets 400; a token is required.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startOrigin, startProxy, request, domain, freePort, type Origin, type Proxy } from './helpers/servers.ts';

const TOKEN = 'stats-test-token';
const auth = { authorization: `Bearer ${TOKEN}` };
let good: Origin, failing: Origin, proxy: Proxy, refused: string;

const api = async (path: string, method = 'GET') => {
  const r = await request(proxy.adminUrl + path, { method, headers: auth });
  return { status: r.status, body: JSON.parse(r.body), headers: r.headers };
};
const sumBuckets = (buckets: any[], f: (b: any) => number) => buckets.reduce((a, b) => a + f(b), 0);

beforeAll(async () => {
  good = await startOrigin();
  failing = await startOrigin((_req, res) => { res.writeHead(500, { 'content-type': 'text/plain' }); res.end('app error'); });
  refused = `127.0.0.1:${await freePort()}`;
  proxy = await startProxy({
    admin: { host: '127.0.0.1', port: 0, token: TOKEN },
    domains: [
      domain('a.test', [good.address], { aliases: ['www.a.test'] }),
      domain('e.test', [failing.address]),
      domain('down.test', [refused]),
      domain('p.test', [good.address, refused]),
    ],
  });
  const body = 'x'.repeat(1000);
  for (let i = 0; i < 6; i++) {
    const r = await request(proxy.url + '/upload', { method: 'POST', body, headers: { host: 'a.test', 'content-type': 'text/plain', 'content-length': String(body.length) } });
    expect(r.status).toBe(200);
  }
  for (let i = 0; i < 3; i++) expect((await request(proxy.url + '/', { headers: { host: 'e.test' } })).status).toBe(500);
  for (let i = 0; i < 2; i++) {
    const r = await request(proxy.url + '/', { headers: { host: 'down.test' } });
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBeTruthy();
  }
});
afterAll(async () => { await proxy?.close(); await good?.close(); await failing?.close(); });

describe('GET /api/stats', () => {
  it('shows passed traffic of a domain in 3-minute buckets', async () => {
    const { status, body } = await api('/api/stats?domain=a.test');
    expect(status).toBe(200);
    expect(body.bucketSeconds).toBe(180);
    expect(body.domain).toBe('a.test');
    const b = body.buckets;
    expect(b.length).toBeGreaterThanOrEqual(1);
    for (const x of b) expect(x.t % 180).toBe(0);
    expect(sumBuckets(b, (x) => x.incoming.requests)).toBe(6);
    expect(sumBuckets(b, (x) => x.passed.requests)).toBe(6);
    expect(sumBuckets(b, (x) => x.dropped.requests)).toBe(0);
    expect(sumBuckets(b, (x) => x.passed.bytesIn)).toBeGreaterThanOrEqual(6 * 1000);
    expect(sumBuckets(b, (x) => x.passed.bytesOut)).toBeGreaterThanOrEqual(6 * `ok from ${good.port}`.length);
    expect(sumBuckets(b, (x) => x.status['2xx'])).toBe(6);
  });

  it('finds a domain by alias and keeps domains apart', async () => {
    const { body } = await api('/api/stats?domain=WWW.A.TEST');
    expect(body.domain).toBe('a.test');
    const p = await api('/api/stats?domain=p.test');
    expect(p.body.buckets.filter((x: any) => x.incoming.requests > 0)).toEqual([]);
  });

  it('counts upstream errors by kind: application 5xx and connect failures', async () => {
    const e = (await api('/api/stats?domain=e.test')).body.buckets;
    expect(sumBuckets(e, (x) => x.upstreamErrors['5xx'])).toBe(3);
    expect(sumBuckets(e, (x) => x.passed.requests)).toBe(3); // the application's own 500 is relayed, it passed the filter
    const d = (await api('/api/stats?domain=down.test')).body.buckets;
    expect(sumBuckets(d, (x) => x.upstreamErrors.connect)).toBe(2);
    expect(sumBuckets(d, (x) => x.passed.requests)).toBe(0);
    expect(sumBuckets(d, (x) => x.proxyAnswered.requests)).toBe(2);
    expect(sumBuckets(d, (x) => x.incoming.requests)).toBe(2);
  });

  it('honours from/to (Unix seconds or ISO 8601)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const all = (await api(`/api/stats?domain=a.test&from=${now - 3600}&to=${now + 10}`)).body.buckets;
    expect(sumBuckets(all, (x) => x.incoming.requests)).toBe(6);
    const past = (await api(`/api/stats?domain=a.test&from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z`)).body;
    expect(past.buckets).toEqual([]);
    expect(past.from).toBe(Date.UTC(2020, 0, 1) / 1000);
  });
});

describe('GET /api/billing', () => {
  it('bills the month from passed traffic, with the samples behind the figure', async () => {
    const month = new Date().toISOString().slice(0, 7);
    const { status, body } = await api(`/api/billing?domain=a.test&month=${month}`);
    expect(status).toBe(200);
    expect(body).toMatchObject({ domain: 'a.test', month, bucketSeconds: 180, discarded: 30, billedBps: 0, billedSample: null });
    const stats = (await api('/api/stats?domain=a.test')).body.buckets;
    expect(sumBuckets(body.samples, (s) => s.bytesIn)).toBe(sumBuckets(stats, (x) => x.passed.bytesIn));
    for (const s of body.samples) expect(s.bps).toBeCloseTo((Math.max(s.bytesIn, s.bytesOut) * 8) / 180);
    // Month defaults to the current one.
    expect((await api('/api/billing?domain=a.test')).body.month).toBe(month);
  });

  it('attack-free failures are not billed: a domain whose upstream is down has no samples', async () => {
    const { body } = await api('/api/billing?domain=down.test');
    expect(body.samplesWithTraffic).toBe(0);
  });
});

describe('GET /metrics', () => {
  it('exposes Prometheus counters labelled by domain and status class only', async () => {
    const r = await request(proxy.adminUrl + '/metrics', { headers: auth });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
    expect(r.body).toContain('scrubber_requests_total{domain="a.test",status_class="2xx"} 6');
    expect(r.body).toContain('scrubber_requests_total{domain="e.test",status_class="5xx"} 3');
    expect(r.body).toContain('scrubber_upstream_connect_errors_total{domain="down.test"} 2');
    expect(r.body).toContain('scrubber_upstream_5xx_total{domain="e.test"} 3');
    expect(r.body).toMatch(/^scrubber_blacklist_size \d+$/m);
    const labelNames = new Set<string>();
    for (const line of r.body.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /\{([^}]*)\}/.exec(line);
      if (m) for (const kv of m[1].split(',')) labelNames.add(kv.split('=')[0]);
    }
    expect([...labelNames].sort()).toEqual(['domain', 'status_class']);
    expect(r.body).not.toContain('/upload');
    expect(r.body).not.toMatch(/127\.0\.0\.1/);
  });
});

describe('POST /api/probe', () => {
  it('reports for each upstream whether it connects, how long it took and the HTTP status, or the error', async () => {
    const { status, body } = await api('/api/probe?domain=p.test', 'POST');
    expect(status).toBe(200);
    expect(body.domain).toBe('p.test');
    const [up, down] = body.upstreams;
    expect(up).toMatchObject({ address: good.address, role: 'main', reachable: true, status: 200, error: null });
    expect(typeof up.connectMs).toBe('number');
    expect(down).toMatchObject({ address: refused, reachable: false, connectMs: null, status: null, error: 'ECONNREFUSED' });
  });
});

describe('GET /api/domains', () => {
  it('lists domains with their upstreams and health', async () => {
    const { body } = await api('/api/domains');
    expect(body.domains.map((d: any) => d.name)).toEqual(['a.test', 'e.test', 'down.test', 'p.test']);
    expect(body.domains[0].upstreams).toEqual([{ address: good.address, role: 'main', healthy: true }]);
    expect(typeof body.blacklistSize).toBe('number');
  });
});

describe('bad input and auth', () => {
  it.each([
    ['GET', '/api/stats'],
    ['GET', '/api/stats?domain=unknown.test'],
    ['GET', '/api/stats?domain=a.test&from=yesterday'],
    ['GET', '/api/stats?domain=a.test&to=12abc'],
    ['GET', '/api/stats?domain=a.test&from=2000&to=1000'],
    ['GET', '/api/stats?domain=a.test&from=0&to=1700000000'],
    ['GET', '/api/billing?domain=a.test&month=2025-13'],
    ['GET', '/api/billing?domain=a.test&month=2025-1'],
    ['GET', '/api/billing?domain=nope.test&month=2025-01'],
    ['POST', '/api/probe?domain=nope.test'],
    ['POST', '/api/probe'],
  ])('%s %s → 400 with a JSON error', async (method, path) => {
    const { status, body, headers } = await api(path, method);
    expect(status).toBe(400);
    expect(headers['content-type']).toMatch(/application\/json/);
    expect(typeof body.error).toBe('string');
    expect(body.error.length).toBeGreaterThan(3);
  });

  it('refuses the API and /metrics without the token, but serves the dashboard page and its assets', async () => {
    for (const p of ['/api/stats?domain=a.test', '/api/billing?domain=a.test', '/metrics', '/api/domains']) {
      const r = await request(proxy.adminUrl + p);
      expect(r.status, p).toBe(401);
    }
    expect((await request(proxy.adminUrl + '/api/probe?domain=a.test', { method: 'POST', headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const page = await request(proxy.adminUrl + '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    expect(page.body).toContain('/dashboard/uPlot.iife.min.js');
    for (const [p, type] of [['/dashboard/app.js', 'text/javascript'], ['/dashboard/app.css', 'text/css'], ['/dashboard/uPlot.iife.min.js', 'text/javascript'], ['/dashboard/uPlot.min.css', 'text/css']]) {
      const r = await request(proxy.adminUrl + p);
      expect(r.status, p).toBe(200);
      expect(r.headers['content-type'], p).toContain(type);
      expect(r.body.length, p).toBeGreaterThan(500);
    }
  });
});
