// A request never waits in undici's own queue for a connection: with every
// connection of the domain's upstreams in use (upstream.maxConnections), it
// waits in the domain's fair queue instead (people first, limits.queueTimeoutMs,
// then the proxy's 503 / 429 queue-timeout), and a balanced domain sends it to
// an upstream that has a free connection. Before: the flow's limit counted
// requests until their response headers (and the adaptive limit, up to 1000,
// knew nothing of the pool), so requests beyond the pool queued in undici,
// first come first served and untimed (upstream.responseTimeoutMs starts on
// a connection), and round robin handed a busy upstream its turn while the
// other was free. Real origins, real clients, the proxy in-process.
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { startOrigin, startProxy, request, domain, until, sleep, freePort, type Origin, type Proxy, type RawResponse } from './helpers/servers.ts';
import { hasRoom, tryOrder } from '../src/upstream/balancer.ts';

const HOST = 'pool.test';

/** An origin that holds every request until release() (4 s at most), and counts them. */
async function holdingOrigin(): Promise<{ origin: Origin; held: http.ServerResponse[]; release(): void }> {
  const held: http.ServerResponse[] = [];
  const finish = (res: http.ServerResponse) => { if (!res.writableEnded && !res.destroyed) { res.writeHead(200, { 'content-length': 4 }); res.end('done'); } };
  const origin = await startOrigin((req, res) => {
    req.resume();
    held.push(res);
    setTimeout(() => finish(res), 4000).unref();
  });
  return { origin, held, release: () => { for (const r of held.splice(0)) finish(r); } };
}

const get = (p: Proxy, path: string, localAddress = '127.0.0.1'): Promise<RawResponse> => request(p.url + path, { headers: { host: HOST }, localAddress });
const queueOf = (p: Proxy) => p.app.pipeline.queues.get(HOST)!;

describe('the upstream pool bounds what goes upstream (upstream.maxConnections)', () => {
  it('default adaptive limit: past the pool a request waits in the fair queue and gets queue-timeout, not an untimed wait in undici', async () => {
    const site = await holdingOrigin();
    const p = await startProxy({ upstream: { maxConnections: 2 }, limits: { queueTimeoutMs: 300 }, filter: { mode: 'off' }, domains: [domain(HOST, [site.origin.address])] });
    try {
      const a = get(p, '/a', '127.0.0.2'), b = get(p, '/b', '127.0.0.3');
      expect(await until(() => site.held.length === 2, 2000)).toBe(true);
      const t0 = performance.now();
      const c = await get(p, '/c', '127.0.0.4');
      const waited = performance.now() - t0;
      // No Accept header: not a browser navigation, so 429 rather than the page (limits-queue.test.ts).
      expect(c.status).toBe(429);
      expect(c.headers['x-scrubber']).toBe('queue-timeout');
      expect(waited).toBeLessThan(1500);
      site.release();
      expect((await a).status).toBe(200);
      expect((await b).status).toBe(200);
      expect(site.origin.seen.map((s) => s.url).sort()).toEqual(['/a', '/b']);
    } finally { site.release(); await p.close(); await site.origin.close(); }
  });

  it('a response still streaming holds its connection: the next request waits in the fair queue until the body ends, then goes', async () => {
    const held: { res: http.ServerResponse | null } = { res: null };
    const origin = await startOrigin((req, res) => {
      req.resume();
      if (req.url === '/stream') { res.writeHead(200, { 'content-type': 'text/plain' }); res.write('part 1\n'); held.res = res; return; }
      res.writeHead(200, { 'content-length': 2 }); res.end('ok');
    });
    const p = await startProxy({ upstream: { maxConnections: 1 }, limits: { queueTimeoutMs: 5000 }, filter: { mode: 'off' }, domains: [domain(HOST, [origin.address])] });
    try {
      const s = get(p, '/stream', '127.0.0.2');
      expect(await until(() => held.res !== null, 2000)).toBe(true);
      // The headers came back (the limit's place is free), the body has not ended: the one connection is still busy.
      const next = get(p, '/next', '127.0.0.3');
      expect(await until(() => queueOf(p).queued === 1, 1000)).toBe(true);
      await sleep(100);
      expect(origin.seen.map((x) => x.url)).toEqual(['/stream']);
      held.res!.end('part 2\n');
      expect((await s).body).toBe('part 1\npart 2\n');
      const r = await next;
      expect(r.status).toBe(200);
      expect(r.body).toBe('ok');
      expect(queueOf(p).queued).toBe(0);
    } finally { held.res?.destroy(); await p.close(); await origin.close(); }
  });

  it('adaptive limits off and no maxInflight: the pool still bounds it, and the queue holds the rest', async () => {
    const site = await holdingOrigin();
    const p = await startProxy({ upstream: { maxConnections: 1 }, limits: { queueTimeoutMs: 300, adaptive: { enabled: false } }, filter: { mode: 'off' }, domains: [domain(HOST, [site.origin.address])] });
    try {
      const a = get(p, '/a', '127.0.0.2');
      expect(await until(() => site.held.length === 1, 2000)).toBe(true);
      const c = await get(p, '/c', '127.0.0.4');
      expect(c.status).toBe(429);
      expect(c.headers['x-scrubber']).toBe('queue-timeout');
      site.release();
      expect((await a).status).toBe(200);
    } finally { site.release(); await p.close(); await site.origin.close(); }
  });

  it('two upstreams, one with every connection busy: the requests go to the other, none waits behind the busy one', async () => {
    const busy = await holdingOrigin();
    const free = await startOrigin();
    const p = await startProxy({ upstream: { maxConnections: 1 }, limits: { queueTimeoutMs: 2000 }, filter: { mode: 'off' }, domains: [domain(HOST, [busy.origin.address, free.address])] });
    try {
      // Round robin: of the first two, one lands on each; the busy origin then holds its connection.
      const first = [get(p, '/r0'), get(p, '/r1')];
      expect(await until(() => busy.held.length === 1 && free.seen.length === 1, 2000)).toBe(true);
      // Each of the next ones in turn (round robin would give the busy upstream every other one).
      for (let i = 2; i < 6; i++) {
        const t0 = performance.now();
        const r = await get(p, `/r${i}`);
        expect(r.status).toBe(200);
        expect(r.body).toBe(`ok from ${free.port}`);
        expect(performance.now() - t0).toBeLessThan(1000);
      }
      expect(busy.origin.seen.length).toBe(1);
      busy.release();
      expect((await Promise.all(first)).map((r) => r.status)).toEqual([200, 200]);
    } finally { busy.release(); await p.close(); await busy.origin.close(); await free.close(); }
  });
});

/** An origin whose /stream answers at once and keeps its body open until release() (its connection stays busy, and
 *  no response deadline runs: the headers came); anything else is answered at once. */
async function streamingOrigin(): Promise<{ origin: Origin; streams: http.ServerResponse[]; release(): void }> {
  const streams: http.ServerResponse[] = [];
  const origin = await startOrigin((req, res) => {
    req.resume();
    if (req.url === '/stream') { res.writeHead(200, { 'content-type': 'text/plain' }); res.write('part 1\n'); streams.push(res); return; }
    const body = `ok from ${origin.port}`;
    res.writeHead(200, { 'content-length': body.length }); res.end(body);
  });
  return { origin, streams, release: () => { for (const r of streams.splice(0)) if (!r.destroyed) r.end('end\n'); } };
}

describe('room that appears without a request ending, and a failover onto a full upstream', () => {
  it('a failover whose only other upstream is full waits there under the response deadline, not untimed', async () => {
    const busy = await streamingOrigin();
    const refused = await freePortAddress();
    const p = await startProxy({ upstream: { maxConnections: 1, responseTimeoutMs: 800 }, limits: { queueTimeoutMs: 300 }, filter: { mode: 'off' }, domains: [domain(HOST, [refused, busy.origin.address])] });
    try {
      // A stream ends on the streaming upstream (directly, or after the refused one): its one connection is busy.
      const stream = get(p, '/stream');
      expect(await until(() => busy.streams.length === 1, 2000)).toBe(true);
      // The refused upstream has room (it is still taken for healthy): admitted, refused, failed over to the full one.
      const t0 = performance.now();
      const r = await get(p, '/second');
      const took = performance.now() - t0;
      expect(r.status).toBe(504);
      expect(r.headers['x-scrubber']).toBe('upstream-timeout');
      // The deadline from the failover (800 ms), not whenever the stream ends.
      expect(took).toBeLessThan(2500);
      busy.release();
      expect((await stream).body).toBe('part 1\nend\n');
      expect(await until(() => p.app.upstreams.groups.get(HOST)!.main.every((u) => u.busy === 0), 3000)).toBe(true);
    } finally { busy.release(); await p.close(); await busy.origin.close(); }
  });

  it('a waiter goes as soon as room appears by a health change (the main one down, the backup free), not at its timeout', async () => {
    const main = await streamingOrigin();
    const backup = await startOrigin();
    const hc = { type: 'tcp', intervalMs: 100, timeoutMs: 200, fall: 1, rise: 1 };
    const p = await startProxy({ upstream: { maxConnections: 1 }, limits: { queueTimeoutMs: 4000 }, filter: { mode: 'off' }, domains: [domain(HOST, [main.origin.address], { backup: [backup.address], healthCheck: hc })] });
    try {
      const stream = get(p, '/stream');
      expect(await until(() => main.streams.length === 1, 2000)).toBe(true);
      const second = get(p, '/second');
      expect(await until(() => queueOf(p).queued === 1, 1000)).toBe(true);
      // The main upstream stops accepting (its stream goes on): its health check fails, the backup is next.
      main.origin.server.close();
      const t0 = performance.now();
      const r = await second;
      expect(r.status).toBe(200);
      expect(r.body).toBe(`ok from ${backup.port}`);
      expect(performance.now() - t0).toBeLessThan(2000);
      main.release();
      expect((await stream).status).toBe(200);
    } finally { main.release(); await p.close(); await main.origin.close(); await backup.close(); }
  });
});

describe('what an upstream counts as busy comes back to zero, however its requests end', () => {
  it('answered, streamed, client gone mid-request and mid-body, refused connection (failover), response timeout, a body that fails', async () => {
    const origin = await startOrigin((req, res) => {
      req.resume();
      if (req.url === '/hang') return; // never answers: the response timeout cuts it
      if (req.url === '/slow-body') { res.writeHead(200); res.write('x'); setTimeout(() => res.end('y'), 300); return; }
      if (req.url === '/wait') { setTimeout(() => { if (!res.destroyed) res.end('late'); }, 300); return; }
      res.end('ok');
    });
    const refused = await freePortAddress();
    const p = await startProxy({ upstream: { maxConnections: 4, responseTimeoutMs: 300, connectTimeoutMs: 300 }, filter: { mode: 'off' }, domains: [domain(HOST, [refused, origin.address])] });
    const busy = () => p.app.upstreams.groups.get(HOST)!.main.map((u) => u.busy);
    try {
      const runs: Promise<unknown>[] = [];
      for (let i = 0; i < 3; i++) {
        runs.push(get(p, '/ok'), get(p, '/hang'), get(p, '/slow-body'));
        // Gone while the origin works on it, and gone while the body streams.
        for (const path of ['/wait', '/slow-body']) {
          runs.push(new Promise<void>((resolve) => {
            const r = http.get({ port: p.port, path, headers: { host: HOST }, agent: false }, (res) => { res.once('data', () => { r.destroy(); resolve(); }); });
            r.on('error', () => resolve());
            if (path === '/wait') setTimeout(() => { r.destroy(); resolve(); }, 100);
          }));
        }
        // A declared body that never comes whole: the client leaves half way.
        runs.push(new Promise<void>((resolve) => {
          const r = http.request({ port: p.port, path: '/upload', method: 'POST', headers: { host: HOST, 'content-length': 100 }, agent: false });
          r.on('error', () => resolve());
          r.write('half');
          setTimeout(() => { r.destroy(); resolve(); }, 150);
        }));
      }
      await Promise.allSettled(runs);
      expect(await until(() => busy().every((n) => n === 0), 3000)).toBe(true);
      expect(queueOf(p).queued).toBe(0);
      // And the domain still takes requests at full width.
      const again = await Promise.all(Array.from({ length: 4 }, () => get(p, '/ok')));
      expect(again.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    } finally { await p.close(); await origin.close(); }
  });
});

/** An address where nothing listens: a refused connection, then failover. */
async function freePortAddress(): Promise<string> { return `127.0.0.1:${await freePort()}`; }

describe('balancer: room (pure)', () => {
  const u = (key: string, healthy: boolean, full: boolean) => ({ key, healthy, full });
  it('room among the upstreams that would be tried: healthy main ones, else healthy backups, else all', () => {
    expect(hasRoom([u('a', true, false)], [])).toBe(true);
    expect(hasRoom([u('a', true, true), u('b', true, false)], [])).toBe(true);
    // A healthy main one exists and every healthy one is full: a backup or a down one with room is not tried.
    expect(hasRoom([u('a', true, true), u('b', false, false)], [u('k', true, false)])).toBe(false);
    expect(hasRoom([u('a', false, false)], [u('k', true, true)])).toBe(false);
    expect(hasRoom([u('a', false, false)], [u('k', true, false)])).toBe(true);
    // Nothing healthy: everything is tried (fail open).
    expect(hasRoom([u('a', false, true)], [u('k', false, false)])).toBe(true);
    expect(hasRoom([u('a', false, true)], [u('k', false, true)])).toBe(false);
  });
  it('the order puts the full ones last, the rest in round-robin order', () => {
    const m = [u('a', true, false), u('b', true, true), u('c', true, false)];
    expect(tryOrder(m, [], 0).map((x) => x.key)).toEqual(['a', 'b', 'c']);
    expect(tryOrder(m, [], 1).map((x) => x.key)).toEqual(['c', 'a', 'b']);
    expect(tryOrder(m, [], 2).map((x) => x.key)).toEqual(['c', 'a', 'b']);
  });
});

describe('a client that leaves while its request still waits for an upstream connection', () => {
  it('the upstream stays counted busy until undici lets go of the request (the connection attempt it holds)', async () => {
    // Accepts TCP and never answers the TLS handshake: undici's one connection to it stays connecting until the
    // connect timeout, with the request on it. Before: the client's leaving gave the place back at once, so the
    // upstream read as having room while its only connection was still taken by the abandoned request.
    const silent = net.createServer((s) => { s.on('error', () => {}); });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const address = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    const p = await startProxy({
      upstream: { maxConnections: 1, connectTimeoutMs: 1200, connectAttempts: 1 }, filter: { mode: 'off' },
      domains: [domain(HOST, [address], { upstreamTls: true, healthCheck: { type: 'tcp', intervalMs: 60000, timeoutMs: 500, fall: 100, rise: 2 } })],
    });
    const up = () => p.app.upstreams.groups.get(HOST)!.main[0];
    try {
      const r = http.get({ port: p.port, path: '/', headers: { host: HOST }, agent: false });
      r.on('error', () => {});
      expect(await until(() => up().busy === 1, 2000)).toBe(true);
      r.destroy();
      await sleep(300);
      // Still connecting for the request that was left: no room yet.
      expect(up().busy).toBe(1);
      expect(up().full).toBe(true);
      // The connect timeout ends undici's hold on it: the place comes back.
      expect(await until(() => up().busy === 0, 3000)).toBe(true);
    } finally { await p.close(); silent.close(); }
  });
});
