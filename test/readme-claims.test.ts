// README claims checked black-box against a real in-process proxy. Both failed
// on the code before 2026-11-29: the pages table listed TRACK with TRACE and
// CONNECT as a 405, while Node's parser does not know the method and answers
// 400 (the table now says so; the test holds what it says); and
// GET /api/domains showed queue.limit 0 ("none") for a domain held to its
// starting limit until its first request.
import { describe, it, expect, afterEach } from 'vitest';
import { startProxy, startOrigin, request, rawExchange, domain, type Proxy, type Origin } from './helpers/servers.ts';

const started: { p?: Proxy; o?: Origin }[] = [];
afterEach(async () => {
  for (const s of started.splice(0)) { await s.p?.close(); await s.o?.close(); }
});

describe('pages the proxy generates', () => {
  it('TRACE gets 405 method-not-allowed, TRACK (unknown to Node\'s parser) 400 bad-request; neither reaches the upstream', async () => {
    const o = await startOrigin();
    const p = await startProxy({ domains: [domain('a.test', [o.address])] });
    started.push({ p, o });
    const trace = await rawExchange(p.port, 'TRACE / HTTP/1.1\r\nHost: a.test\r\n\r\n', { timeoutMs: 1500 });
    expect(trace.text).toMatch(/^HTTP\/1\.1 405 /);
    const track = await rawExchange(p.port, 'TRACK / HTTP/1.1\r\nHost: a.test\r\n\r\n', { timeoutMs: 1500 });
    expect(track.text.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(track.text.toLowerCase()).toContain('x-scrubber: bad-request');
    expect(o.seen.filter((s) => s.method === 'TRACK')).toHaveLength(0);
  });
});

describe('GET /api/domains → queue.limit', () => {
  const domainsOf = async (p: Proxy) => JSON.parse((await request(p.adminUrl + '/api/domains')).body).domains as { name: string; queue: { maxInflight: number; limit: number } }[];

  it('a freshly started proxy shows the initial adaptive limit (20), not 0 ("none"), before the domain has had a request', async () => {
    const o = await startOrigin();
    const p = await startProxy({ domains: [domain('a.test', [o.address])] });
    started.push({ p, o });
    const [d] = await domainsOf(p);
    expect(d.queue.limit).toBe(20);
  });

  it('with adaptive off, a domain with maxInflight 5 shows queue.limit 5 from the start, not 0', async () => {
    const o = await startOrigin();
    const p = await startProxy({ limits: { adaptive: { enabled: false } }, domains: [domain('a.test', [o.address], { maxInflight: 5 })] });
    started.push({ p, o });
    const [d] = await domainsOf(p);
    expect(d.queue.maxInflight).toBe(5);
    expect(d.queue.limit).toBe(5);
  });
});
