// A source at its connection cap (limits.maxConnectionsPerSource: a NAT, a busy client): the proxy closes the
// source's longest-idle keep-alive connection to admit a new one, never one still sending a response. A request is
// observed (its connection counted idle) when its *upstream* part is over, while up to the 1 MiB read-ahead may still
// wait in the proxy for its client; until 2026-11-29 that download was the one closed, cut short, although a truly
// idle keep-alive connection of the same source was there to close. Real origin, proxy, clients on 127/8.
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import tls from 'node:tls';
import fs from 'node:fs';
import { startOrigin, startProxy, domain, sleep, until, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki } from './helpers/certs.ts';
import { SourceConnections, adoptConnectionInfo, connectionInfo } from '../src/listen/connections.ts';

const KIB = 1024;
const MIB = 1024 * KIB;

/** How many bytes the kernel takes off a server for a client that reads nothing (server send buffer plus client
 *  receive buffer, 3-4 MiB on Linux loopback): as test/edge-abuse-forward.test.ts measures it. */
async function kernelAbsorbs(): Promise<number> {
  let written = 0;
  let last = -1;
  const server = http.createServer((_q, res) => {
    const chunk = Buffer.alloc(64 * KIB);
    const pump = () => { while (written < 64 * MIB) { written += chunk.length; if (!res.write(chunk)) return void res.once('drain', pump); } };
    res.writeHead(200, { 'content-length': 64 * MIB });
    pump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const s = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  s.on('error', () => {});
  s.on('connect', () => { s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'); s.pause(); });
  for (let i = 0; i < 30 && written !== last; i++) { last = written; await sleep(300); }
  s.destroy();
  server.closeAllConnections();
  server.close();
  return written;
}

describe('a source at its connection cap', () => {
  let origin: Origin;
  let proxy: Proxy;
  const sockets: net.Socket[] = [];
  beforeAll(async () => {
    origin = await startOrigin((req, res) => {
      const m = /^\/big\/(\d+)/.exec(req.url ?? '');
      const body = m ? Buffer.alloc(Number(m[1]), 'x') : Buffer.from('small');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
      res.end(body);
    });
    proxy = await startProxy({ limits: { maxConnectionsPerSource: 2 }, domains: [domain('site.test', [origin.address])] });
  });
  afterAll(async () => { for (const s of sockets) s.destroy(); await proxy.close(); await origin.close(); });

  it('closes its idle keep-alive connection to admit a new one, never one still sending a response', async () => {
    const ip = '127.0.22.1';
    // Larger than what the kernel takes, within it plus the 1 MiB read-ahead: the upstream part ends (the request is
    // observed) while the rest still waits in the proxy for this client.
    const size = (await kernelAbsorbs()) + 512 * KIB;
    let observed = false;
    proxy.app.pipeline.onObserve((o) => { if (o.path.startsWith('/big/')) observed = true; });

    // A: a download the client reads a little later (a slow mobile link).
    const a = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip });
    sockets.push(a);
    a.on('error', () => {});
    const aChunks: Buffer[] = [];
    a.on('connect', () => { a.write(`GET /big/${size} HTTP/1.1\r\nHost: site.test\r\n\r\n`); a.pause(); });
    expect(await until(() => observed, 5000)).toBe(true);

    // B: a keep-alive connection of the same source, answered and really idle now.
    const b = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip });
    sockets.push(b);
    b.on('error', () => {});
    let bText = '';
    b.on('data', (c) => { bText += c; });
    b.on('connect', () => b.write('GET /small HTTP/1.1\r\nHost: site.test\r\n\r\n'));
    expect(await until(() => bText.endsWith('small'), 3000)).toBe(true);
    await sleep(50);

    // C: a third connection of the source, at its cap of 2: one connection must make room.
    const c = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip });
    sockets.push(c);
    c.on('error', () => {});
    await Promise.race([once(c, 'connect'), sleep(1000)]);
    c.write('GET /small HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n');
    await sleep(200);

    // A now reads everything it is sent.
    a.on('data', (chunk: Buffer) => aChunks.push(chunk));
    const aClosed = once(a, 'close');
    a.resume();
    const all = () => Buffer.concat(aChunks);
    const bodyBytes = () => { const t = all(); const i = t.indexOf('\r\n\r\n'); return i < 0 ? 0 : t.length - i - 4; };
    await Promise.race([aClosed, until(() => bodyBytes() >= size, 8000)]);
    expect({ downloaded: bodyBytes(), cut: a.destroyed && bodyBytes() < size }).toEqual({ downloaded: size, cut: false });
  });
});

describe('a source at its connection cap, over TLS', () => {
  it('what waits for the client is in the TLS socket, not the raw one: a connection with a response still going out is not idle', async () => {
    // Until 2026-11-29 the check read the raw TCP socket, which holds nothing on a TLS connection (a reviewer measured
    // 582,824 bytes waiting in the TLSSocket and 0 in the raw one), so at the cap an HTTPS download was closed first.
    // Real TLS connections on loopback; the cap's own object, as the listener drives it.
    const pki = makePki();
    const leaf = pki.leaf('site.test');
    const accepted: { raw: net.Socket; tls: tls.TLSSocket }[] = [];
    const server = tls.createServer({ cert: fs.readFileSync(leaf.cert), key: fs.readFileSync(leaf.key) }, (t) => {
      t.on('error', () => {});
      accepted.push({ raw: (t as unknown as { _parent: net.Socket })._parent, tls: t });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const clients: tls.TLSSocket[] = [];
    const open = async () => {
      const c = tls.connect({ port, host: '127.0.0.1', localAddress: '127.0.23.1', servername: 'site.test', ca: fs.readFileSync(pki.ca) } as tls.ConnectionOptions);
      c.on('error', () => {});
      c.pause(); // reads nothing
      clients.push(c);
      const n = accepted.length;
      await until(() => accepted.length > n, 3000);
      return accepted[accepted.length - 1];
    };
    try {
      const conns = new SourceConnections(2);
      const a = await open(), b = await open();
      for (const [x, idleSince] of [[a, 1], [b, 2]] as const) {
        expect(conns.admit(x.raw, '127.0.23.1')).toBe(true);
        const info = adoptConnectionInfo(x.tls, x.raw);
        info.requests = 1; info.idleSince = idleSince; // both answered; A idle the longest
      }
      // A's response still going out: written until the kernel's buffers are full and the TLS socket holds what the
      // client has not taken (a write that does not drain within 300 ms).
      const chunk = Buffer.alloc(64 * 1024, 1);
      for (let i = 0; i < 2000; i++) {
        if (a.tls.write(chunk)) continue;
        const drained = await Promise.race([once(a.tls, 'drain').then(() => true), sleep(300).then(() => false)]);
        if (!drained) break;
      }
      expect(a.tls.writableLength).toBeGreaterThan(0);
      const c = await open();
      expect(conns.admit(c.raw, '127.0.23.1')).toBe(true);
      // The truly idle B made room; A, still sending, is kept.
      expect({ aClosed: a.raw.destroyed, bClosed: b.raw.destroyed }).toEqual({ aClosed: false, bClosed: true });
      expect(connectionInfo(a.raw).wire).toBe(a.tls);
    } finally {
      for (const c of clients) c.destroy();
      for (const x of accepted) x.tls.destroy();
      server.close();
    }
  });
});
