// Passthrough connections in statistics and attack mode, and their splice:
// the shared tunnel (src/upstream/tunnel.ts) with its idle timeout, and
// closed at the end of a drain. No request is visible inside them: a
// connection counts as its domain's request, a failed upstream connect as
// an upstream error.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { once } from 'node:events';
import { startProxy, startBlackhole, domain, freePort, until, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

let pki: TestPki;
let upstream: https.Server;
let upstreamAddress: string;
let refused: string;
beforeAll(async () => {
  pki = makePki();
  const c = pki.leaf('pass.test');
  upstream = https.createServer({ cert: fs.readFileSync(c.cert), key: fs.readFileSync(c.key) }, (_q, r) => r.end('x'.repeat(1000)));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamAddress = `127.0.0.1:${(upstream.address() as net.AddressInfo).port}`;
  refused = `127.0.0.1:${await freePort()}`;
});
afterAll(() => { upstream.closeAllConnections(); upstream.close(); });

async function start(extra: Record<string, unknown> = {}): Promise<{ proxy: Proxy; port: number }> {
  const proxy = await startProxy({
    tls: { listen: [{ host: '127.0.0.1', port: 0 }] },
    upstream: { connectTimeoutMs: 500, connectAttempts: 1 },
    domains: [domain('pass.test', [upstreamAddress], { passthrough: true }), domain('down.test', [refused], { passthrough: true })],
    ...extra,
  });
  return { proxy, port: proxy.app.listeners.addresses().find((x) => x.tls)!.port };
}

/** One TLS connection by SNI; resolves when it is closed (by either side), with how long it lasted. */
function connectTls(port: number, servername: string, opts: { localAddress?: string; get?: boolean; hold?: boolean } = {}): Promise<{ ms: number; secure: boolean; body: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const s = tls.connect({ socket: net.connect({ port, host: '127.0.0.1', localAddress: opts.localAddress }), servername, ca: fs.readFileSync(pki.ca) });
    let secure = false;
    let body = '';
    s.on('secureConnect', () => {
      secure = true;
      if (opts.get) s.write(`GET / HTTP/1.1\r\nhost: ${servername}\r\nconnection: ${opts.hold ? 'keep-alive' : 'close'}\r\n\r\n`);
      else if (!opts.hold) s.end();
    });
    s.on('data', (c) => { body += c; });
    s.on('error', () => {});
    s.on('close', () => resolve({ ms: performance.now() - t0, secure, body }));
  });
}

const now = () => Math.floor(Date.now() / 1000);

describe('passthrough in statistics and attack mode', () => {
  it('a spliced connection is counted passed with its bytes once it ended; a refused upstream as a connect error', async () => {
    const { proxy, port } = await start();
    const ok = await connectTls(port, 'pass.test', { get: true });
    expect(ok.body).toMatch(/^HTTP\/1.1 200/);
    const down = await connectTls(port, 'down.test');
    expect(down.secure).toBe(false);
    expect(await until(() => proxy.app.stats.buckets('pass.test', now() - 600, now() + 600).some((b) => b.passed.requests === 1), 2000)).toBe(true);
    const [p] = proxy.app.stats.buckets('pass.test', now() - 600, now() + 600);
    expect(p.incoming.requests).toBe(1);
    // The whole TLS conversation, both ways: more than the 1000-byte body.
    expect(p.passed.bytesOut).toBeGreaterThan(1000);
    expect(p.passed.bytesIn).toBeGreaterThan(200);
    const [d] = proxy.app.stats.buckets('down.test', now() - 600, now() + 600);
    expect(d).toMatchObject({ incoming: { requests: 1 }, passed: { requests: 0 }, proxyAnswered: { requests: 1 }, upstreamErrors: { connect: 1 } });
    await proxy.close();
  });

  it('a passthrough domain whose upstream refuses every connection goes into attack mode (upstream failing)', async () => {
    const { proxy, port } = await start({ filter: { attack: { enterSeconds: 1 } } });
    const deadline = Date.now() + 6000;
    let i = 0;
    while (!proxy.app.filter.attackState('down.test')?.under && Date.now() < deadline) {
      await Promise.all(Array.from({ length: 5 }, () => connectTls(port, 'down.test', { localAddress: `127.0.10.${1 + (i++ % 50)}` })));
      await new Promise((r) => setTimeout(r, 100));
    }
    const st = proxy.app.filter.attackState('down.test');
    expect(st?.under).toBe(true);
    expect(st?.reason).toBe('upstream failing');
    // The healthy passthrough domain is not taken along.
    expect(proxy.app.filter.attackState('pass.test')?.under ?? false).toBe(false);
    await proxy.close();
  });

  it('each passthrough connection is counted against its source at accept: a source over the per-source cap is refused', async () => {
    const { proxy, port } = await start({ limits: { maxConnectionsPerSource: 2 } });
    const held = [connectTls(port, 'pass.test', { localAddress: '127.0.11.1', get: true, hold: true }), connectTls(port, 'pass.test', { localAddress: '127.0.11.1', get: true, hold: true })];
    await until(() => proxy.app.listeners.tunnels.size === 2, 2000);
    const third = await connectTls(port, 'pass.test', { localAddress: '127.0.11.1' });
    expect(third.secure).toBe(false);
    // Another source is not affected.
    expect((await connectTls(port, 'pass.test', { localAddress: '127.0.11.2', get: true })).body).toMatch(/^HTTP\/1.1 200/);
    proxy.app.listeners.tunnels.closeAll();
    await Promise.all(held);
    await proxy.close();
  });
});

describe('the passthrough splice', () => {
  it('an idle passthrough connection is closed after the tunnel idle time', async () => {
    const { proxy, port } = await start();
    // Long enough that a loaded machine's handshake and answer fit in it: the silence after them is what is cut.
    proxy.app.listeners.passthroughIdleMs = 1000;
    // A kept-alive HTTP/1.1 connection to the upstream (whose own keep-alive is 5 s): after the answer, silence.
    const r = await connectTls(port, 'pass.test', { get: true, hold: true });
    expect(r.body).toMatch(/^HTTP\/1.1 200/);
    expect(r.ms).toBeGreaterThanOrEqual(1000);
    expect(r.ms).toBeLessThan(4000);
    expect(await until(() => proxy.app.listeners.tunnels.size === 0, 1000)).toBe(true);
    await proxy.close();
  });

  it('a drain closes what is still spliced once the drain time is over', async () => {
    const { proxy, port } = await start({ shutdown: { drainTimeoutMs: 300 } });
    const held = connectTls(port, 'pass.test', { get: true, hold: true });
    expect(await until(() => proxy.app.listeners.tunnels.size === 1, 2000)).toBe(true);
    const t0 = performance.now();
    await proxy.close();
    await held;
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('a drain also closes a passthrough connection still waiting for its upstream to accept', async () => {
    // The upstream never accepts: the connection waits connectTimeoutMs × connectAttempts, far past the drain.
    const hole = await startBlackhole();
    try {
      const { proxy, port } = await start({
        shutdown: { drainTimeoutMs: 300 }, upstream: { connectTimeoutMs: 4000, connectAttempts: 2 },
        domains: [domain('hole.test', [hole.address], { passthrough: true })],
      });
      const waiting = connectTls(port, 'hole.test', { hold: true });
      // Past the ClientHello, before any upstream accepted it.
      await new Promise((r) => setTimeout(r, 200));
      expect(proxy.app.listeners.tunnels.size).toBe(0);
      const t0 = performance.now();
      await proxy.close();
      const took = performance.now() - t0;
      expect((await waiting).secure).toBe(false);
      expect(took).toBeLessThan(1500);
    } finally {
      hole.close();
    }
  });
});
