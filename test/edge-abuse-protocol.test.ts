// Protocol abuse found by the adversarial probe of issue 12 (items 2, 3, 7, 8 and the late 504):
// each case sends raw bytes and checks both what the client got and what the upstream received.
import net from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, rawExchange, request, domain, sleep, statusOf, type Origin, type Proxy } from './helpers/servers.ts';
import { checkRequest } from '../src/http/hygiene.ts';

let origin: Origin;
let silent: Origin;
let proxy: Proxy;

const BIG = 1536 * 1024; // over 1 MiB: the size at which curl starts sending Expect: 100-continue

beforeAll(async () => {
  origin = await startOrigin();
  // An upstream that takes requests and never answers them.
  silent = await startOrigin(() => {});
  proxy = await startProxy({
    limits: { maxBodyBytes: 4 * 1024 * 1024 },
    upstream: { responseTimeoutMs: 300 },
    domains: [
      domain('site.test', [origin.address]), domain('silent.test', [silent.address]),
      domain('down.test', [origin.address], { maintenance: { enabled: true, redirect: null, retryAfterSeconds: 60 } }),
    ],
  });
});
afterAll(async () => { await proxy.close(); await origin.close(); await silent.close(); });
beforeEach(() => { origin.seen.length = 0; });

/** Reads from a raw socket until `pred` holds on everything received (or timeoutMs). */
function readUntil(s: net.Socket, pred: (t: string) => boolean, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const done = () => { clearTimeout(t); s.off('data', on); s.off('close', done); resolve(text); };
    const on = (c: Buffer) => { text += c.toString('latin1'); if (pred(text)) done(); };
    const t = setTimeout(done, timeoutMs);
    s.on('data', on);
    s.on('close', done);
  });
}

describe('Expect: 100-continue (item 2)', () => {
  it('a curl-like upload over 1 MiB gets 100, then the upstream\'s 200, and the body arrives whole without Expect', async () => {
    const s = net.connect(proxy.port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    s.write(`POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Type: application/octet-stream\r\nContent-Length: ${BIG}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`);
    const interim = await readUntil(s, (t) => t.includes('\r\n\r\n'), 3000);
    expect(statusOf(interim)).toBe(100);
    const rest = readUntil(s, () => false, 8000);
    s.write(Buffer.alloc(BIG, 'a'));
    const text = await rest;
    expect(statusOf(text)).toBe(200);
    expect(text).toContain('ok from');
    expect(origin.seen).toHaveLength(1);
    expect(origin.seen[0].body.length).toBe(BIG);
    expect(origin.seen[0].headers.expect).toBeUndefined();
  });

  /** Sends a head with Expect: 100-continue and reads the first response head the proxy sends back. */
  async function expectFirst(head: string): Promise<{ s: net.Socket; first: string }> {
    const s = net.connect(proxy.port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    s.write(head);
    return { s, first: await readUntil(s, (t) => t.includes('\r\n\r\n'), 3000) };
  }

  // As nginx and HAProxy: a body the proxy will refuse is never asked for (RFC 9110 §10.1.1 lets the server answer
  // the final status instead of 100); the client does not upload megabytes only to be told 413.
  it('a Content-Length over limits.maxBodyBytes gets 413 at once, never 100, and nothing reaches the upstream', async () => {
    const { s, first } = await expectFirst(`POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: ${5 * 1024 * 1024}\r\nExpect: 100-continue\r\n\r\n`);
    expect(statusOf(first)).toBe(413);
    expect(first).toMatch(/x-scrubber: body-too-large/i);
    await readUntil(s, () => false, 2000); // until the proxy closes the connection
    expect(s.destroyed || s.readableEnded).toBe(true);
    expect(origin.seen).toHaveLength(0);
    s.destroy();
  });

  it('a request refused before its body (maintenance, a source the filter drops) gets no 100 either', async () => {
    const m = await expectFirst('POST /f HTTP/1.1\r\nHost: down.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    expect(statusOf(m.first)).toBe(503);
    m.s.destroy();
    const d = proxy.app.filter.detector;
    const judge = d.judge;
    d.judge = () => ({ kind: 'drop' });
    try {
      const b = await expectFirst('POST /f HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
      expect(b.first).toBe('');
      b.s.destroy();
    } finally { d.judge = judge; }
    expect(origin.seen).toHaveLength(0);
  });

  it('a small upload gets 100, then the upstream\'s 200, on a connection that stays open for the next request', async () => {
    const { s, first } = await expectFirst('POST /small HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    expect(first).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    const rest = readUntil(s, (t) => t.includes('ok from'), 3000);
    s.write('hello');
    expect(statusOf(await rest)).toBe(200);
    const next = readUntil(s, (t) => t.includes('ok from'), 3000);
    s.write('GET /next HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n');
    expect(statusOf(await next)).toBe(200);
    s.destroy();
    expect(origin.seen.map((r) => [r.url, r.body])).toEqual([['/small', 'hello'], ['/next', '']]);
  });

  it('a request with no body that still sends Expect gets its 100 at once, as before, and its connection stays open', async () => {
    const { s, first } = await expectFirst('GET /nobody HTTP/1.1\r\nHost: site.test\r\nExpect: 100-continue\r\n\r\n');
    expect(first).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    const rest = await readUntil(s, (t) => t.includes('ok from'), 3000);
    expect(statusOf(rest)).toBe(200);
    const next = readUntil(s, (t) => t.includes('ok from'), 3000);
    s.write('GET /next HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n');
    expect(statusOf(await next)).toBe(200);
    s.destroy();
  });
});

describe('Connection cannot strip what the proxy sets or routes by (item 7)', () => {
  it('Connection: keep-alive, Host → the upstream still receives the client\'s Host', async () => {
    const r = await rawExchange(proxy.port, 'GET /h HTTP/1.1\r\nHost: site.test\r\nConnection: keep-alive, Host, X-Forwarded-For, Via, Content-Length\r\n\r\n', { timeoutMs: 1500 });
    expect(statusOf(r.text)).toBe(200);
    expect(origin.seen).toHaveLength(1);
    const h = origin.seen[0].headers;
    expect(h.host).toBe('site.test');
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
    expect(h.via).toContain('scrubber');
  });

  it('a header the client names in Connection is still removed', async () => {
    const r = await rawExchange(proxy.port, 'GET /h HTTP/1.1\r\nHost: site.test\r\nConnection: close, X-Private\r\nX-Private: secret\r\n\r\n', { timeoutMs: 1500 });
    expect(statusOf(r.text)).toBe(200);
    expect(origin.seen[0].headers['x-private']).toBeUndefined();
  });
});

describe('hygiene (item 8)', () => {
  const refused: [string, string][] = [
    ['Upgrade: h2c (a tunnel would bypass every per-request check)', 'GET / HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n'],
    ['Upgrade: websocket, h2c', 'GET / HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade\r\nUpgrade: websocket, H2C\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'],
    ['Transfer-Encoding: gzip, chunked', 'POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['Transfer-Encoding: chunked twice', 'POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['HTTP/2 prior knowledge (PRI * HTTP/2.0)', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['Transfer-Encoding: identity, chunked', 'POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
  ];
  for (const [name, wire] of refused) {
    it(`${name} → 400, nothing forwarded`, async () => {
      const r = await rawExchange(proxy.port, wire, { timeoutMs: 1500 });
      expect(statusOf(r.text)).toBe(400);
      expect(r.text.toLowerCase()).toContain('x-scrubber: bad-request');
      await sleep(50);
      expect(origin.seen).toHaveLength(0);
    });
  }

  it('plain chunked (any case) is still forwarded', async () => {
    const r = await rawExchange(proxy.port, 'POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
    expect(statusOf(r.text)).toBe(200);
    expect(origin.seen[0].body).toBe('abc');
  });

  it('checkRequest: h2c in any Upgrade token and non-chunked codings are refused (pure)', () => {
    expect(checkRequest('GET', '/', ['Host', 'a', 'Upgrade', 'h2c'], 10)?.status).toBe(400);
    expect(checkRequest('GET', '/', ['Host', 'a', 'Upgrade', 'websocket'], 10)).toBeNull();
    expect(checkRequest('POST', '/', ['Host', 'a', 'Transfer-Encoding', ' chunked '], 10)).toBeNull();
    expect(checkRequest('POST', '/', ['Host', 'a', 'Transfer-Encoding', 'deflate,chunked'], 10)?.status).toBe(400);
  });
});

describe('pipelined data after Connection: close (item 8)', () => {
  // The first request is executed by the upstream; the bytes after it must be ignored (RFC 9112 §9.6: a server
  // that sent close must not process further requests), not turned into a destroyed socket that loses the
  // answer. Today llhttp reports HPE_CLOSED_CONNECTION for those bytes, and the listener's 'clientError' handler
  // destroys the socket because a response is in flight. The fix is in src/listen/listeners.ts (see the report):
  // marked it.fails until then.
  it('the client gets the answer to its first request; the pipelined one is not forwarded', async () => {
    const r = await rawExchange(proxy.port, 'GET /first HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\nGET /second HTTP/1.1\r\nHost: site.test\r\n\r\n', { timeoutMs: 2000 });
    expect(origin.seen.map((x) => x.url)).toEqual(['/first']);
    expect(statusOf(r.text)).toBe(200);
    expect(r.text).toContain('ok from');
    expect(r.closed).toBe(true);
  });
});

describe('a failure the proxy caused is not the upstream\'s (item 3)', () => {
  it('OPTIONS * is answered, and 40 of them (and 20 Expect uploads) in 2 s leave the upstream healthy and the domain not under attack', async () => {
    const r = await rawExchange(proxy.port, 'OPTIONS * HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n', { timeoutMs: 1500 });
    expect(statusOf(r.text)).toBe(200);
    expect(r.text.toLowerCase()).toMatch(/\r\nallow: /);
    expect(origin.seen).toHaveLength(0);
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) {
      // Distinct sources, so that no per-source rule is what keeps the domain calm.
      const x = await rawExchange(proxy.port, 'OPTIONS * HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n', { timeoutMs: 1500, localAddress: `127.0.9.${i + 1}` });
      statuses.push(statusOf(x.text));
      if (i % 2 === 0) {
        // Head and body at once (as curl does after its 1 s wait): the interim 100, then the upstream's answer.
        const e = await rawExchange(proxy.port, 'POST /e HTTP/1.1\r\nHost: site.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello', { timeoutMs: 1500, localAddress: `127.0.10.${i + 1}` });
        statuses.push(Number(/HTTP\/1\.1 (\d{3}) (?!Continue)/.exec(e.text)?.[1] ?? 0));
      }
      await sleep(30);
    }
    expect(statuses).toHaveLength(60);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // Attack mode samples once a second: give it two samples.
    await sleep(2200);
    const d = JSON.parse((await request(`${proxy.adminUrl}/api/domains`)).body);
    const site = d.domains.find((x: { name: string }) => x.name === 'site.test');
    expect(site.underAttack).toBe(false);
    expect(site.upstreams.every((u: { healthy: boolean }) => u.healthy)).toBe(true);
  });
});

describe('the 504 is exact (responseTimeoutMs 300)', () => {
  it('an upstream that never answers → 504 between 300 and 450 ms', async () => {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const r = await rawExchange(proxy.port, 'GET /slow HTTP/1.1\r\nHost: silent.test\r\nConnection: close\r\n\r\n', { timeoutMs: 3000 });
      times.push(performance.now() - t0);
      expect(statusOf(r.text)).toBe(504);
    }
    for (const t of times) { expect(t).toBeGreaterThanOrEqual(295); expect(t).toBeLessThan(450); }
  });
});
