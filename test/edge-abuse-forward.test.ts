// Forwarding under abuse (issue 12). Slow readers (item 6): a client that does not read its response must not
// hold an upstream connection (the response is read ahead, bounded), and one that reads nothing at all is cut
// after the send deadline, with the outcome saying so. A request undici refuses to send (item 3) is the proxy's
// failure, not the upstream's. Real upstreams, raw clients that never read.
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, request, domain, sleep, until, type Origin, type Proxy } from './helpers/servers.ts';
import { loadConfigObject } from '../src/config/load.ts';
import { Upstreams } from '../src/upstream/upstreams.ts';
import { errors } from 'undici';
import { classify, forward, readAheadBudget, type ForwardOutcome } from '../src/upstream/forward.ts';
import { toUpstreamHeaders } from '../src/upstream/headers.ts';

const KIB = 1024;

/**
 * How many bytes the kernel takes off a server for a client that reads nothing (the server's send buffer plus
 * the client's receive buffer; about 3-4 MiB on Linux loopback). A response no larger is gone from the proxy
 * anyway, so the slow-reader response must be larger than this, and within it plus the 1 MiB read-ahead.
 */
async function kernelAbsorbs(): Promise<number> {
  let written = 0;
  let last = -1;
  const server = http.createServer((_q, res) => {
    // Drain-paced 64 KiB writes, as the proxy relays: once the client stops taking bytes, the count stops.
    const chunk = Buffer.alloc(64 * KIB);
    const pump = () => { while (written < 64 * 1024 * KIB) { written += chunk.length; if (!res.write(chunk)) return void res.once('drain', pump); } };
    res.writeHead(200, { 'content-length': 64 * 1024 * KIB });
    pump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const s = nonReaderTo((server.address() as net.AddressInfo).port, '/', '127.0.0.1');
  // Stalled when nothing more went out in 300 ms.
  for (let i = 0; i < 30 && written !== last; i++) { last = written; await sleep(300); }
  s.destroy();
  server.closeAllConnections();
  server.close();
  return written;
}

/** /big/<n> answers n KiB, /small a few bytes; counts responses the origin could not finish. */
async function bigOrigin(): Promise<Origin & { state: { cut: number } }> {
  const state = { cut: 0 };
  const o = await startOrigin((req, res) => {
    const m = /^\/big\/(\d+)/.exec(req.url ?? '');
    const body = m ? Buffer.alloc(Number(m[1]) * KIB, 'x') : Buffer.from('small');
    res.on('close', () => { if (!res.writableFinished) state.cut++; });
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  return Object.assign(o, { state });
}

/** A raw client that sends a GET and then never reads a byte. */
function nonReader(port: number, path: string, i: number): net.Socket {
  return nonReaderTo(port, path, `127.0.7.${i + 1}`);
}
function nonReaderTo(port: number, path: string, localAddress: string): net.Socket {
  const s = net.connect({ port, host: '127.0.0.1', localAddress });
  s.on('error', () => {});
  s.on('connect', () => { s.write(`GET ${path} HTTP/1.1\r\nHost: site.test\r\n\r\n`); s.pause(); });
  return s;
}

describe('through the proxy: upstream.maxConnections 8', () => {
  let origin: Awaited<ReturnType<typeof bigOrigin>>;
  let proxy: Proxy;
  const readers: net.Socket[] = [];
  beforeAll(async () => {
    origin = await bigOrigin();
    proxy = await startProxy({
      upstream: { maxConnections: 8, responseTimeoutMs: 3000 },
      domains: [domain('site.test', [origin.address])],
    });
  });
  afterAll(async () => { for (const s of readers) s.destroy(); await proxy.close(); await origin.close(); });

  it('8 clients that do not read a response (what the kernel holds + 512 KiB) leave the upstream free for others', async () => {
    const kib = Math.ceil((await kernelAbsorbs()) / KIB) + 512;
    for (let i = 0; i < 8; i++) readers.push(nonReader(proxy.port, `/big/${kib}`, i));
    expect(await until(() => origin.seen.length >= 8, 3000)).toBe(true);
    await sleep(200);
    const t0 = performance.now();
    const others = await Promise.all(Array.from({ length: 4 }, (_, i) =>
      request(`${proxy.url}/small`, { headers: { host: 'site.test' }, localAddress: `127.0.8.${i + 1}`, timeout: 2500 })
        .then((r) => r.status, () => 0)));
    expect(others).toEqual([200, 200, 200, 200]);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe('forward() on its own', () => {
  let origin: Awaited<ReturnType<typeof bigOrigin>>;
  let upstreams: Upstreams;
  let front: http.Server;
  let port: number;
  const outcomes: ForwardOutcome[] = [];
  let slowCalls = 0;
  beforeAll(async () => {
    origin = await bigOrigin();
    const r = loadConfigObject({ listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, domains: [domain('site.test', [origin.address])] }, {});
    if (!r.ok) throw new Error(r.problems.join('\n'));
    upstreams = new Upstreams();
    upstreams.apply(r.config);
    front = http.createServer((req, res) => {
      // X-Path: a target the pipeline would never hand over, to reach undici's own validation.
      const path = typeof req.headers['x-path'] === 'string' ? req.headers['x-path'] : req.url ?? '/';
      forward({
        req, res, path, method: req.method ?? 'GET', body: null,
        headers: toUpstreamHeaders(req.rawHeaders, { client: '127.0.0.1', proto: 'http', host: 'site.test' }),
        responseTimeoutMs: 2000, connectAttempts: 1, sendTimeoutMs: 300, onSlowReader: () => { slowCalls++; },
      }, upstreams.groups.get('site.test')!, (o, sendPage) => {
        outcomes.push(o);
        // As the pipeline does: the proxy's page, named by X-Scrubber.
        if (sendPage && o.proxyReason && !res.headersSent) res.writeHead(o.status, { 'x-scrubber': o.proxyReason, 'content-length': 0 }).end();
      });
    }).listen(0, '127.0.0.1');
    await once(front, 'listening');
    port = (front.address() as net.AddressInfo).port;
  });
  afterAll(async () => { front.closeAllConnections(); front.close(); await upstreams.close(); await origin.close(); });

  it('a client that reads nothing of a 16 MiB response is cut after sendTimeoutMs; the upstream request with it', async () => {
    const s = nonReader(port, '/big/16384', 0);
    const t0 = performance.now();
    expect(await until(() => outcomes.length === 1, 4000)).toBe(true);
    const took = performance.now() - t0;
    s.destroy();
    expect(outcomes[0]).toMatchObject({ status: 200, slowReader: true, clientAborted: true });
    expect(slowCalls).toBe(1);
    // At least one send deadline after the read-ahead filled; well before the response could have gone out.
    expect(took).toBeGreaterThanOrEqual(300);
    expect(took).toBeLessThan(2500);
    expect(await until(() => origin.state.cut === 1, 2000)).toBe(true);
  });

  it('a client that reads, however slowly, is not cut', async () => {
    outcomes.length = 0;
    slowCalls = 0;
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => {});
    let got = 0;
    s.on('data', (c) => { got += c.length; s.pause(); setTimeout(() => s.resume(), 100); });
    s.write('GET /big/2048 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n');
    expect(await until(() => got >= 2048 * KIB, 20000)).toBe(true);
    s.destroy();
    expect(outcomes[0]).toMatchObject({ status: 200, slowReader: false, clientAborted: false });
    expect(slowCalls).toBe(0);
  });

  it('all responses together read ahead no more than the process-wide budget, and give it back', async () => {
    outcomes.length = 0;
    const limit = readAheadBudget.limit;
    readAheadBudget.limit = 2 * 1024 * KIB;
    try {
      const seen = origin.seen.length;
      const rs = Array.from({ length: 4 }, (_, i) => nonReader(port, '/big/16384', i + 10));
      expect(await until(() => origin.seen.length === seen + 4, 3000)).toBe(true);
      let most = 0;
      for (let i = 0; i < 30; i++) { most = Math.max(most, readAheadBudget.held); await sleep(10); }
      expect(most).toBeGreaterThan(1024 * KIB);
      expect(most).toBeLessThanOrEqual(2 * 1024 * KIB);
      for (const r of rs) r.destroy();
      expect(await until(() => readAheadBudget.held === 0, 2000)).toBe(true);
      // Every one of the four forwards has ended (cut by the send deadline or by its client leaving) before the next
      // test reads `outcomes`: the deadline counts from when bytes began to wait, which may be less than 300 ms ago.
      expect(await until(() => outcomes.length === 4, 2000)).toBe(true);
    } finally {
      readAheadBudget.limit = limit;
    }
  });

  it('a request undici refuses to write is a 400 of the proxy: no upstreamError, no health report, nothing sent', async () => {
    outcomes.length = 0;
    const up = upstreams.groups.get('site.test')!.main[0];
    const seenBefore = origin.seen.length;
    for (let i = 0; i < 5; i++) {
      const r = await request(`http://127.0.0.1:${port}/`, { headers: { 'x-path': 'no-slash here' } });
      expect(r.status).toBe(400);
      expect(r.headers['x-scrubber']).toBe('bad-request');
    }
    expect(outcomes.map((o) => [o.status, o.proxyReason, o.upstreamError])).toEqual(Array(5).fill([400, 'bad-request', null]));
    expect(up.health).toMatchObject({ healthy: true, failures: 0 });
    expect(origin.seen.length).toBe(seenBefore);
  });
});

describe('classify (pure)', () => {
  it('undici\'s request-validation errors are not upstream failures', () => {
    expect(classify(new errors.InvalidArgumentError('path must be an absolute URL or start with a slash'))).toBe('invalid');
    expect(classify(new errors.NotSupportedError('expect header not supported'))).toBe('invalid');
    expect(classify(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe('reset');
  });
});
