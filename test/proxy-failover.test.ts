// Upstream failure, SPEC.md §3: connect timeouts are retried once and then
// failed over, refusals and resets fail over at once, a silent upstream gives
// the 504 page, and only when nothing could be reached does the client get the
// 502 page. All with short configured times and real sockets: a blackhole
// listener for connect timeouts, a closed port for refusals.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { startOrigin, startProxy, startBlackhole, freePort, request, domain, sleep, type Origin, type Proxy } from './helpers/servers.ts';

const CONNECT_MS = 300;
const RESPONSE_MS = 500;

/** A TCP server that runs `onSocket` for every connection and counts them. */
async function startRawServer(onSocket: (s: net.Socket) => void): Promise<{ port: number; address: string; connections: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => { st.connections++; sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); onSocket(s); });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  const st = {
    port, address: `127.0.0.1:${port}`, connections: 0,
    close: () => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => srv.close(() => r())); },
  };
  return st;
}

let origin: Origin;
let statusOrigin: Origin;
let proxy: Proxy;
let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
let refused: string;
let refused2: string;
let resetter: Awaited<ReturnType<typeof startRawServer>>;
let closer: Awaited<ReturnType<typeof startRawServer>>;
let silent: Awaited<ReturnType<typeof startRawServer>>;

beforeAll(async () => {
  origin = await startOrigin();
  statusOrigin = await startOrigin((req, res) => {
    const status = Number(req.url?.slice(1)) || 200;
    res.writeHead(status, { 'content-type': 'application/json', 'x-app': 'mine', 'retry-after': '7' });
    res.end(JSON.stringify({ app: true, status }));
  });
  blackhole = await startBlackhole();
  refused = `127.0.0.1:${await freePort()}`;
  refused2 = `127.0.0.1:${await freePort()}`;
  // Resets as soon as the request head arrives: the upstream accepted, then died.
  resetter = await startRawServer((s) => s.once('data', () => s.resetAndDestroy()));
  // Reads the request and closes cleanly without a byte of response.
  closer = await startRawServer((s) => s.once('data', () => s.end()));
  // Accepts and reads, never answers.
  silent = await startRawServer((s) => s.resume());
  proxy = await startProxy({
    upstream: { connectTimeoutMs: CONNECT_MS, connectAttempts: 2, responseTimeoutMs: RESPONSE_MS },
    limits: { minBodyRateBytesPerSec: 0 },
    domains: [
      domain('bh-first.test', [blackhole.address, origin.address]),
      domain('bh-post.test', [blackhole.address, origin.address]),
      domain('bh-trickle.test', [blackhole.address, origin.address]),
      domain('bh-only.test', [blackhole.address]),
      domain('bh-only-post.test', [blackhole.address]),
      domain('bh-then-refused.test', [blackhole.address, refused]),
      domain('refused-first.test', [refused, origin.address]),
      domain('refused-post.test', [refused, origin.address]),
      domain('refused-only.test', [refused, refused2]),
      domain('reset-first.test', [resetter.address, origin.address]),
      domain('reset-only.test', [resetter.address]),
      domain('closer-only.test', [closer.address]),
      domain('silent.test', [silent.address]),
      domain('silent-first.test', [silent.address, origin.address]),
      domain('status.test', [statusOrigin.address]),
    ],
  });
});
afterAll(async () => {
  await proxy.close();
  blackhole.close();
  await Promise.all([origin.close(), statusOrigin.close(), resetter.close(), closer.close(), silent.close()]);
});

const timed = async <T>(p: Promise<T>): Promise<[T, number]> => { const t = performance.now(); const r = await p; return [r, performance.now() - t]; };
const get = (host: string, path = '/') => timed(request(proxy.url + path, { headers: { host } }));
const post = (host: string, body: string) => timed(request(proxy.url + '/upload', { method: 'POST', headers: { host, 'content-type': 'text/plain' }, body }));
const sha = (s: string) => crypto.createHash('sha256').update(s).digest('hex');

describe('connect timeout', () => {
  it('a blackhole upstream is tried connectAttempts times, each waiting connectTimeoutMs, then the next upstream answers', async () => {
    const [r, ms] = await get('bh-first.test');
    expect(r.status).toBe(200);
    expect(r.body).toBe(`ok from ${origin.port}`);
    // Two attempts of 300 ms each: clearly more than one, clearly less than three.
    expect(ms).toBeGreaterThan(2 * CONNECT_MS - 50);
    expect(ms).toBeLessThan(3 * CONNECT_MS + 400);
  });

  it('a POST fails over too, and the next upstream receives the whole body intact', async () => {
    const body = crypto.randomBytes(512 * 1024).toString('hex'); // 1 MB: far more than any stream buffer
    const before = origin.seen.length;
    const [r, ms] = await post('bh-post.test', body);
    expect(r.status).toBe(200);
    expect(ms).toBeGreaterThan(2 * CONNECT_MS - 50);
    const seen = origin.seen.slice(before);
    expect(seen.length).toBe(1);
    expect(seen[0].method).toBe('POST');
    expect(seen[0].body.length).toBe(body.length);
    expect(sha(seen[0].body)).toBe(sha(body));
  });

  it('a body that trickles in while the proxy waits on the blackhole is not consumed by the failed attempts', async () => {
    // forward.ts only fails over when the body is untouched (readableDidRead); if undici had
    // started reading it during the doomed connects, this would be a 502, or a truncated body.
    const parts = ['first-', 'second-', 'third-', 'fourth'];
    const before = origin.seen.length;
    const started = performance.now();
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(proxy.url + '/trickle', { method: 'POST', agent: false, headers: { host: 'bh-trickle.test', 'transfer-encoding': 'chunked' } }, (r) => {
        let b = ''; r.setEncoding('utf8'); r.on('data', (c) => (b += c)); r.on('end', () => resolve({ status: r.statusCode!, body: b }));
      });
      req.on('error', reject);
      void (async () => { for (const p of parts) { req.write(p); await sleep(150); } req.end(); })();
    });
    expect(res.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThan(2 * CONNECT_MS - 50);
    expect(origin.seen.slice(before).map((s) => s.body)).toEqual([parts.join('')]);
  });

  it('the only upstream a blackhole: 502 page with X-Scrubber: connect-timeout after about 2 × connectTimeoutMs', async () => {
    const [r, ms] = await get('bh-only.test');
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBe('connect-timeout');
    expect(r.body).toContain('HTTP QRATOR 502');
    expect(ms).toBeGreaterThan(2 * CONNECT_MS - 50);
    expect(ms).toBeLessThan(3 * CONNECT_MS + 400);
  });

  it('the same for a POST', async () => {
    const [r] = await post('bh-only-post.test', 'x'.repeat(100_000));
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBe('connect-timeout');
  });

  it('blackhole then refused: 502 after the timeouts', async () => {
    const [r, ms] = await get('bh-then-refused.test');
    expect(r.status).toBe(502);
    expect(['connect-timeout', 'connect-refused']).toContain(r.headers['x-scrubber']);
    expect(ms).toBeGreaterThan(2 * CONNECT_MS - 50);
  });
});

describe('refused', () => {
  it('a refused upstream fails over at once (no connect timeout is waited)', async () => {
    const [r, ms] = await get('refused-first.test');
    expect(r.status).toBe(200);
    expect(r.body).toBe(`ok from ${origin.port}`);
    expect(ms).toBeLessThan(CONNECT_MS);
  });

  it('a POST fails over at once with its body intact', async () => {
    const body = crypto.randomBytes(64 * 1024).toString('hex');
    const before = origin.seen.length;
    const [r, ms] = await post('refused-post.test', body);
    expect(r.status).toBe(200);
    expect(ms).toBeLessThan(CONNECT_MS);
    expect(sha(origin.seen.slice(before)[0].body)).toBe(sha(body));
  });

  it('none reachable: 502 page with X-Scrubber: connect-refused, quickly', async () => {
    const [r, ms] = await get('refused-only.test');
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBe('connect-refused');
    expect(r.body).toContain('HTTP QRATOR 502');
    expect(ms).toBeLessThan(CONNECT_MS);
  });
});

describe('reset and close', () => {
  it('an upstream that resets the connection: a GET moves on to the next upstream', async () => {
    const before = resetter.connections;
    const [r] = await get('reset-first.test');
    expect(r.status).toBe(200);
    expect(r.body).toBe(`ok from ${origin.port}`);
    expect(resetter.connections).toBe(before + 1);
  });

  it('the only upstream resets: a 502 page from the proxy, for GET and POST', async () => {
    const [g] = await get('reset-only.test');
    expect(g.status).toBe(502);
    expect(g.headers['x-scrubber']).toBeDefined();
    expect(g.body).toContain('HTTP QRATOR 502');
    const [p] = await post('reset-only.test', 'payload');
    expect(p.status).toBe(502);
    expect(p.headers['x-scrubber']).toBeDefined();
  });

  it('an upstream that closes without answering: a 502 page from the proxy', async () => {
    const [r] = await get('closer-only.test');
    expect(r.status).toBe(502);
    expect(r.headers['x-scrubber']).toBeDefined();
    expect(r.body).toContain('HTTP QRATOR 502');
  });
});

describe('response timeout', () => {
  it('an upstream that accepts and never sends headers: 504 page with X-Scrubber: upstream-timeout after responseTimeoutMs', async () => {
    const [r, ms] = await get('silent.test');
    expect(r.status).toBe(504);
    expect(r.headers['x-scrubber']).toBe('upstream-timeout');
    expect(r.body).toContain('HTTP QRATOR 504');
    expect(ms).toBeGreaterThan(RESPONSE_MS - 50);
    expect(ms).toBeLessThan(RESPONSE_MS + 1500);
  });

  it('is not failed over: the request may already have been acted on', async () => {
    const before = origin.seen.length;
    const [r] = await get('silent-first.test');
    expect(r.status).toBe(504);
    expect(origin.seen.length).toBe(before);
  });
});

describe('application responses', () => {
  it('403, 500 and 503 from the application are relayed untouched: status, body, headers, no X-Scrubber', async () => {
    for (const s of [403, 500, 503]) {
      const [r] = await get('status.test', `/${s}`);
      expect(r.status).toBe(s);
      expect(r.body).toBe(JSON.stringify({ app: true, status: s }));
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['x-app']).toBe('mine');
      expect(r.headers['retry-after']).toBe('7');
      expect(r.headers['x-scrubber']).toBeUndefined();
    }
  });

  it('application 5xx responses do not mark the upstream down', async () => {
    for (let i = 0; i < 5; i++) expect((await get('status.test', '/500'))[0].status).toBe(500);
    expect(proxy.app.upstreams.groups.get('status.test')!.main[0].healthy).toBe(true);
  });
});
