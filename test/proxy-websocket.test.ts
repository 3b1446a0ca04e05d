// WebSocket upgrades, end to end over raw sockets: the handshake reaches the
// upstream with the forwarding headers, bytes flow both ways (including ones
// sent along with the handshake), failures fail over like plain requests, and
// when no upstream can be reached the client gets a 502 from the proxy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { startProxy, startBlackhole, freePort, domain, sleep, request, type Proxy } from './helpers/servers.ts';
import type { Observation } from '../src/observe/observation.ts';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const accept = (key: string) => crypto.createHash('sha1').update(key + GUID).digest('base64');

interface WsOrigin { address: string; upgrades: http.IncomingHttpHeaders[]; closed: number; close(): Promise<void> }

/** An upstream that accepts WebSocket handshakes on /ws and echoes every byte; /deny answers 403. */
async function startWsOrigin(): Promise<WsOrigin> {
  const o: WsOrigin = { address: '', upgrades: [], closed: 0, close: async () => {} };
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => { res.writeHead(200); res.end('plain'); });
  server.on('upgrade', (req, socket: net.Socket, head: Buffer) => {
    o.upgrades.push(req.headers);
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => { o.closed++; sockets.delete(socket); });
    if (req.url === '/deny') {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\ndenied');
      return;
    }
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept(String(req.headers['sec-websocket-key']))}\r\nX-Origin: yes\r\n\r\n`);
    if (head.length) socket.write(head);
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  o.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  o.close = () => { for (const s of sockets) s.destroy(); server.closeAllConnections(); return new Promise((r) => server.close(() => r())); };
  return o;
}

/** A raw client: sends the handshake (plus optional extra bytes in the same write), collects everything. */
async function wsClient(port: number, host: string, opts: { path?: string; extraHeaders?: string; early?: Buffer; localAddress?: string } = {}) {
  const key = crypto.randomBytes(16).toString('base64');
  const s = net.connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
  s.on('error', () => {});
  let buf = Buffer.alloc(0);
  s.on('data', (c: Buffer) => { buf = Buffer.concat([buf, c]); });
  await once(s, 'connect');
  const hs = `GET ${opts.path ?? '/ws'} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${opts.extraHeaders ?? ''}\r\n`;
  s.write(opts.early ? Buffer.concat([Buffer.from(hs), opts.early]) : Buffer.from(hs));
  const headEnd = () => buf.indexOf('\r\n\r\n');
  return {
    socket: s,
    key,
    /** Waits (bounded) until the response head has arrived; returns it and the bytes after it so far. */
    async head(ms = 3000): Promise<string> {
      const t = performance.now();
      while (headEnd() < 0 && !s.destroyed && performance.now() - t < ms) await sleep(5);
      return headEnd() < 0 ? '' : buf.subarray(0, headEnd()).toString();
    },
    /** Bytes received after the response head. */
    body: () => (headEnd() < 0 ? Buffer.alloc(0) : buf.subarray(headEnd() + 4)),
    async bodyLength(n: number, ms = 3000) {
      const t = performance.now();
      while ((headEnd() < 0 || buf.length - headEnd() - 4 < n) && performance.now() - t < ms) await sleep(5);
    },
  };
}

let ws: WsOrigin;
let proxy: Proxy;
let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
let refused: string;
let silent: net.Server;

beforeAll(async () => {
  // Accepts and reads the handshake, never answers.
  silent = net.createServer((s) => { s.on('error', () => {}); s.resume(); });
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  ws = await startWsOrigin();
  blackhole = await startBlackhole();
  refused = `127.0.0.1:${await freePort()}`;
  proxy = await startProxy({
    upstream: { connectTimeoutMs: 300, connectAttempts: 2, responseTimeoutMs: 500 },
    domains: [
      domain('ws.test', [ws.address]),
      domain('ws-failover.test', [refused, ws.address]),
      domain('ws-bh-failover.test', [blackhole.address, ws.address]),
      domain('ws-down.test', [refused]),
      domain('ws-bh.test', [blackhole.address]),
      domain('ws-silent.test', [`127.0.0.1:${(silent.address() as net.AddressInfo).port}`]),
    ],
  });
});
afterAll(async () => { await proxy.close(); blackhole.close(); await ws.close(); silent.close(); });

describe('WebSocket upgrade', () => {
  it('is proxied end to end: 101 from the upstream, bytes both ways', async () => {
    const c = await wsClient(proxy.port, 'ws.test');
    const head = await c.head();
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    expect(head.toLowerCase()).toContain(`sec-websocket-accept: ${accept(c.key).toLowerCase()}`);
    expect(head.toLowerCase()).toContain('upgrade: websocket');
    for (const msg of ['hello', 'second message']) {
      const before = c.body().length;
      c.socket.write(msg);
      await c.bodyLength(before + msg.length);
      expect(c.body().subarray(before).toString()).toBe(msg);
    }
    // A bigger payload than any socket buffer, to see it stream both ways.
    const big = crypto.randomBytes(2 * 1024 * 1024);
    const before = c.body().length;
    c.socket.write(big);
    await c.bodyLength(before + big.length, 5000);
    expect(c.body().subarray(before).equals(big)).toBe(true);
    c.socket.destroy();
  });

  it('the upstream sees X-Forwarded-For appended with the client address, -Proto/-Host set, and no Connection-named headers', async () => {
    const n = ws.upgrades.length;
    const c = await wsClient(proxy.port, 'ws.test', {
      localAddress: '127.0.0.5',
      extraHeaders: 'X-Forwarded-For: 203.0.113.9\r\nX-Secret: s\r\nConnection: X-Secret\r\n',
    });
    expect(await c.head()).toMatch(/^HTTP\/1\.1 101/);
    const h = ws.upgrades[n];
    expect(h['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.5');
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h['x-forwarded-host']).toBe('ws.test');
    expect(h.upgrade).toBe('websocket');
    expect(String(h.connection).toLowerCase()).toContain('upgrade');
    expect(h['x-secret']).toBeUndefined();
    c.socket.destroy();
  });

  it('bytes sent together with the handshake reach the upstream', async () => {
    const c = await wsClient(proxy.port, 'ws.test', { early: Buffer.from('early-bytes') });
    expect(await c.head()).toMatch(/^HTTP\/1\.1 101/);
    await c.bodyLength(11);
    expect(c.body().toString()).toBe('early-bytes');
    c.socket.destroy();
  });

  it('a client that closes takes the upstream connection down with it', async () => {
    const c = await wsClient(proxy.port, 'ws.test');
    expect(await c.head()).toMatch(/^HTTP\/1\.1 101/);
    const closed = ws.closed;
    c.socket.destroy();
    const t = performance.now();
    while (ws.closed === closed && performance.now() - t < 2000) await sleep(10);
    expect(ws.closed).toBe(closed + 1);
  });

  it('an upstream that declines the upgrade: its answer is relayed', async () => {
    const c = await wsClient(proxy.port, 'ws.test', { path: '/deny' });
    const head = await c.head();
    expect(head).toMatch(/^HTTP\/1\.1 403/);
    expect(head.toLowerCase()).not.toContain('x-scrubber');
    await c.bodyLength(6);
    expect(c.body().toString()).toBe('denied');
    c.socket.destroy();
  });

  it('fails over past a refused upstream at once', async () => {
    const t = performance.now();
    const c = await wsClient(proxy.port, 'ws-failover.test');
    expect(await c.head()).toMatch(/^HTTP\/1\.1 101/);
    expect(performance.now() - t).toBeLessThan(300);
    c.socket.write('ping');
    await c.bodyLength(4);
    expect(c.body().toString()).toBe('ping');
    c.socket.destroy();
  });

  it('fails over past a blackhole after connectAttempts × connectTimeoutMs', async () => {
    const t = performance.now();
    const c = await wsClient(proxy.port, 'ws-bh-failover.test');
    expect(await c.head()).toMatch(/^HTTP\/1\.1 101/);
    const ms = performance.now() - t;
    expect(ms).toBeGreaterThan(550);
    expect(ms).toBeLessThan(1300);
    c.socket.destroy();
  });

  it('no upstream reachable: a 502 page with X-Scrubber, then the connection is closed', async () => {
    const c = await wsClient(proxy.port, 'ws-down.test');
    const head = await c.head();
    expect(head).toMatch(/^HTTP\/1\.1 502/);
    expect(head.toLowerCase()).toContain('x-scrubber: connect-refused');
    await c.bodyLength(10);
    expect(c.body().toString()).toContain('HTTP QRATOR 502');
    c.socket.destroy();
  });

  it('a blackhole only: 502 connect-timeout after the attempts, not a hang', async () => {
    const t = performance.now();
    const c = await wsClient(proxy.port, 'ws-bh.test');
    const head = await c.head();
    expect(head).toMatch(/^HTTP\/1\.1 502/);
    expect(head.toLowerCase()).toContain('x-scrubber: connect-timeout');
    expect(performance.now() - t).toBeGreaterThan(550);
    c.socket.destroy();
  });

  it('an upstream that accepts but never answers the handshake: 504 page after responseTimeoutMs', async () => {
    const t = performance.now();
    const c = await wsClient(proxy.port, 'ws-silent.test');
    const head = await c.head();
    expect(head).toMatch(/^HTTP\/1\.1 504/);
    expect(head.toLowerCase()).toContain('x-scrubber: upstream-timeout');
    expect(performance.now() - t).toBeGreaterThan(450);
    c.socket.destroy();
  });

  it('takes the same flow as other requests: observed, counted in the statistics, and held to the per-source cap', async () => {
    const seen: Observation[] = [];
    proxy.app.pipeline.onObserve((o) => { if (o.upgrade) seen.push(o); });
    const c = await wsClient(proxy.port, 'ws.test', { localAddress: '127.0.70.1' });
    expect(await c.head()).toMatch(/^HTTP\/1\.1 101/);
    expect(seen.at(-1)).toMatchObject({ domain: 'ws.test', source: '127.0.70.1', status: 101, outcome: 'passed', upgrade: true });
    c.socket.destroy();
    const stats = JSON.parse((await request(`${proxy.adminUrl}/api/stats?domain=ws.test`)).body) as { buckets: { passed: { requests: number } }[] };
    expect(stats.buckets.reduce((n, b) => n + b.passed.requests, 0)).toBeGreaterThan(0);

    const capped = await startProxy({
      upstream: { connectTimeoutMs: 300, responseTimeoutMs: 2000 }, limits: { maxInflightPerSource: 1 },
      domains: [domain('ws-silent.test', [`127.0.0.1:${(silent.address() as net.AddressInfo).port}`])],
    });
    try {
      const first = await wsClient(capped.port, 'ws-silent.test', { localAddress: '127.0.70.2' });
      await sleep(100);
      const second = await wsClient(capped.port, 'ws-silent.test', { localAddress: '127.0.70.2' });
      const head = await second.head();
      expect(head).toMatch(/^HTTP\/1\.1 429/); // an upgrade cannot use the 503 page: told 429 + Retry-After
      expect(head.toLowerCase()).toContain('x-scrubber: overloaded');
      // Another source is not held to the first one's cap.
      const other = await wsClient(capped.port, 'ws-silent.test', { localAddress: '127.0.70.3' });
      expect(await other.head(300)).toBe('');
      for (const x of [first, second, other]) x.socket.destroy();
    } finally { await capped.close(); }
  });

  it('an upstream that goes away closes the client side of the tunnel', async () => {
    const c = await wsClient(proxy.port, 'ws.test');
    expect(await c.head()).toMatch(/^HTTP\/1\.1 101/);
    const closed = once(c.socket, 'close');
    await ws.close();
    const timer = setTimeout(() => c.socket.destroy(new Error('still open')), 2000);
    await closed;
    clearTimeout(timer);
    expect(c.socket.errored).toBeNull();
  });
});
