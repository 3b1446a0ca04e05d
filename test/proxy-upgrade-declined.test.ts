// An upgrade the upstream declines (a plain response instead of 101) is relayed as it is, then the connection closes.
// Its request holds its per-source slot and counts in flight until that response has gone; it used to give them back
// only at the response's clean end, so a declined response cut by the upstream, or left by its client, held them for
// good, kept the upstream's response being read, and left the client's half-open socket to hold shutdown for ever.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { startProxy, domain, openRaw, until, sleep, type Proxy } from './helpers/servers.ts';

let origin: http.Server;
let address: string;
let proxy: Proxy;
const upstreamSockets = new Set<net.Socket>();

beforeAll(async () => {
  origin = http.createServer();
  origin.on('upgrade', (req, socket: net.Socket) => {
    upstreamSockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => upstreamSockets.delete(socket));
    socket.on('end', () => socket.destroy());
    socket.resume();
    if (req.url === '/silent') return; // never answers the handshake
    if (req.url === '/latin1') { socket.end(Buffer.concat([Buffer.from('HTTP/1.1 403 Forbidden\r\nX-Note: caf'), Buffer.from([0xe9]), Buffer.from('\r\nContent-Length: 5\r\n\r\nnope!')])); return; }
    if (req.url === '/whole') { socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!'); return; }
    // Declined: a chunked 403 whose body starts, then is either cut (/cut) or never finishes (/hang).
    socket.write('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n');
    if (req.url === '/cut') setTimeout(() => socket.destroy(), 50);
  });
  origin.listen(0, '127.0.0.1');
  await once(origin, 'listening');
  address = `127.0.0.1:${(origin.address() as net.AddressInfo).port}`;
  proxy = await startProxy({ shutdown: { drainTimeoutMs: 500 }, domains: [domain('ws.test', [address])] });
});
afterAll(async () => { await proxy?.close(); for (const s of upstreamSockets) s.destroy(); origin?.close(); });

const handshake = (path: string) => `GET ${path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

describe('a declined upgrade', () => {
  it('gives its slots back when the upstream cuts its response', async () => {
    const c = openRaw(proxy.port, handshake('/cut'));
    expect(await until(() => c.text().includes('nope!'), 2000)).toBe(true);
    expect(c.text()).toMatch(/^HTTP\/1\.1 403/);
    await Promise.race([c.closed, sleep(2000)]);
    expect(await until(() => proxy.app.pipeline.inFlight === 0, 1000)).toBe(true);
    expect(proxy.app.pipeline.perSource.of('127.0.0.1')).toBe(0);
    c.s.destroy();
  });

  it('gives its slots back, and lets the upstream go, when its client leaves', async () => {
    const c = openRaw(proxy.port, handshake('/hang'));
    expect(await until(() => c.text().includes('nope!'), 2000)).toBe(true);
    c.s.destroy();
    expect(await until(() => proxy.app.pipeline.inFlight === 0, 1000)).toBe(true);
    expect(proxy.app.pipeline.perSource.of('127.0.0.1')).toBe(0);
    expect(await until(() => upstreamSockets.size === 0, 1000)).toBe(true);
  });

  it('cuts an answer the upstream stalls in for longer than bodyTimeoutMs (nothing else times it: shutdown waited on it)', async () => {
    const p = await startProxy({ shutdown: { drainTimeoutMs: 300 }, upstream: { bodyTimeoutMs: 300 }, domains: [domain('ws.test', [address])] });
    try {
      const c = openRaw(p.port, handshake('/hang'));
      expect(await until(() => c.text().includes('nope!'), 2000)).toBe(true);
      expect(await Promise.race([c.closed.then(() => true), sleep(2000).then(() => false)])).toBe(true);
      expect(await until(() => p.app.pipeline.inFlight === 0, 1000)).toBe(true);
      expect(p.app.pipeline.perSource.of('127.0.0.1')).toBe(0);
    } finally { await Promise.race([p.close(), sleep(3000)]); }
  });

  it('closes the connection once answered, so a client that keeps its half open does not hold shutdown', async () => {
    const p = await startProxy({ shutdown: { drainTimeoutMs: 300 }, domains: [domain('ws.test', [address])] });
    const s = net.connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true });
    s.on('error', () => {});
    let text = '';
    s.on('data', (c) => { text += c; });
    s.write(handshake('/whole'));
    expect(await until(() => text.includes('nope!'), 2000)).toBe(true);
    await sleep(100);
    const t0 = Date.now();
    await Promise.race([p.close(), sleep(3000)]);
    s.destroy();
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  // Neither is a tunnel yet, nor a request Node's server tracks (it let go of the socket at the Upgrade head), so the
  // drain's deadline cut neither: shutdown waited for the upstream's body timeout (300 s by default), or its answer.
  for (const [what, path, seen] of [['stalls in its declined answer', '/hang', 'nope!'], ['never answers the handshake', '/silent', '']] as const) {
    it(`is cut at drainTimeoutMs when the upstream ${what}`, async () => {
      const p = await startProxy({ shutdown: { drainTimeoutMs: 300 }, domains: [domain('ws.test', [address])] });
      const c = openRaw(p.port, handshake(path));
      if (seen) expect(await until(() => c.text().includes(seen), 2000)).toBe(true);
      else expect(await until(() => upstreamSockets.size > 0, 2000)).toBe(true);
      const t0 = Date.now();
      await Promise.race([p.close(), sleep(4000)]);
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(await Promise.race([c.closed.then(() => true), sleep(500).then(() => false)])).toBe(true);
      c.s.destroy();
    });
  }

  it("relays the upstream's header bytes as they are (a Latin-1 byte is not re-encoded as UTF-8)", async () => {
    const s = net.connect(proxy.port, '127.0.0.1');
    const got: Buffer[] = [];
    s.on('data', (c: Buffer) => got.push(c));
    s.write(handshake('/latin1'));
    await Promise.race([once(s, 'close'), sleep(2000)]);
    const bytes = Buffer.concat(got);
    const at = bytes.indexOf('X-Note: caf');
    expect(at).toBeGreaterThan(0);
    expect([...bytes.subarray(at + 11, at + 13)]).toEqual([0xe9, 0x0d]);
    s.destroy();
  });
});
