// TLS floods: a deadline on the handshake (counted against the source as
// slow), per-source caps and bans applied at accept before any handshake, and
// session resumption so that returning visitors pay less.
import { capturedClientHello } from './helpers/certs.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { once } from 'node:events';
import { startOrigin, startProxy, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';
import { loadConfigObject } from '../src/config/load.ts';

let pki: TestPki;
let origin: Origin;
let passOrigin: https.Server;
const TIMEOUT = 400;
const HEADER_TIMEOUT = 600;

beforeAll(async () => {
  pki = makePki();
  origin = await startOrigin((_q, r) => r.end('ok'));
  const p = pki.leaf('pass.test');
  passOrigin = https.createServer({ cert: fs.readFileSync(p.cert), key: fs.readFileSync(p.key) }, (_q, r) => r.end('passed'));
  passOrigin.listen(0, '127.0.0.1');
  await once(passOrigin, 'listening');
});
afterAll(async () => { await origin.close(); passOrigin.closeAllConnections(); passOrigin.close(); });

/** The proxy, terminating a.test; with passthrough, pass.test is on the same port (so every ClientHello is peeked first). */
async function start(opts: { passthrough: boolean; handshakeTimeoutMs?: number; maxConnectionsPerSource?: number }): Promise<{ proxy: Proxy; port: number; raw: Record<string, unknown> }> {
  const a = pki.leaf('a.test');
  const raw = {
    tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }], handshakeTimeoutMs: opts.handshakeTimeoutMs ?? TIMEOUT },
    limits: { maxConnectionsPerSource: opts.maxConnectionsPerSource ?? 64, headerTimeoutMs: HEADER_TIMEOUT },
    domains: [
      domain('a.test', [origin.address]),
      ...(opts.passthrough ? [domain('pass.test', [`127.0.0.1:${(passOrigin.address() as net.AddressInfo).port}`], { passthrough: true })] : []),
    ],
  };
  const proxy = await startProxy(raw);
  return { proxy, port: proxy.app.listeners.addresses().find((x) => x.tls)!.port, raw };
}

const clientHello = capturedClientHello;

/** Opens a TCP connection, writes `send` (if any) and waits until the proxy closes it; ms until then, or -1 on timeout. */
function stall(port: number, opts: { send?: Buffer; localAddress?: string; waitMs?: number } = {}): Promise<number> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
    s.on('connect', () => { if (opts.send) s.write(opts.send); });
    s.on('data', () => {});
    s.on('error', () => {});
    const t = setTimeout(() => { s.destroy(); resolve(-1); }, opts.waitMs ?? 3000);
    s.on('close', () => { clearTimeout(t); resolve(Date.now() - t0); });
  });
}

function get(port: number, servername: string, extra: https.RequestOptions = {}): Promise<{ body: string; socket: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, servername, headers: { host: servername }, ca: fs.readFileSync(pki.ca), agent: false, ...extra }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ body, socket: res.socket as tls.TLSSocket }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe.each([false, true])('handshake deadline (passthrough domains configured: %s)', (passthrough) => {
  let proxy: Proxy;
  let port: number;
  beforeAll(async () => ({ proxy, port } = await start({ passthrough })));
  afterAll(() => proxy.close());

  it('a client that connects and never sends a ClientHello is closed after handshakeTimeoutMs, and counted as slow', async () => {
    const calls: [string, string][] = [];
    const f = proxy.app.filter.detector;
    const orig = f.onClientError.bind(f);
    f.onClientError = (s, k) => { calls.push([s, k]); orig(s, k); };
    try {
      const ms = await stall(port, { localAddress: '127.0.3.1' });
      expect(ms).toBeGreaterThanOrEqual(TIMEOUT - 50);
      expect(ms).toBeLessThan(TIMEOUT + 1000);
    } finally { f.onClientError = orig; }
    expect(calls).toEqual([['127.0.3.1', 'HPE_HEADERS_TIMEOUT']]);
  });

  it('a client that sends its ClientHello and stalls mid-handshake is closed too', async () => {
    const ms = await stall(port, { send: await clientHello('a.test'), localAddress: '127.0.3.2' });
    expect(ms).toBeGreaterThanOrEqual(TIMEOUT - 50);
    expect(ms).toBeLessThan(TIMEOUT + 1000);
  });

  it('half a ClientHello is closed at the deadline', async () => {
    const h = await clientHello('pass.test');
    const ms = await stall(port, { send: h.subarray(0, 40), localAddress: '127.0.3.3' });
    expect(ms).toBeGreaterThanOrEqual(TIMEOUT - 50);
    expect(ms).toBeLessThan(TIMEOUT + 1000);
  });

  it('after the handshake, slow headers still get their 408 (node:http connection checks run behind the front)', async () => {
    const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca: fs.readFileSync(pki.ca) }, () => resolve(s));
      s.on('error', reject);
    });
    const t0 = Date.now();
    socket.write('GET / HTTP/1.1\r\nhost: a.test\r\n');
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    await once(socket, 'close');
    expect(Buffer.concat(chunks).toString()).toMatch(/^HTTP\/1.1 408/);
    expect(Date.now() - t0).toBeLessThan(HEADER_TIMEOUT + 1500);
  });

  it('a finished handshake is not cut by the deadline', async () => {
    const { socket } = await new Promise<{ socket: tls.TLSSocket }>((resolve, reject) => {
      const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca: fs.readFileSync(pki.ca) }, () => resolve({ socket: s }));
      s.on('error', reject);
    });
    await new Promise((r) => setTimeout(r, TIMEOUT + 200));
    expect(socket.destroyed).toBe(false);
    socket.write('GET / HTTP/1.1\r\nhost: a.test\r\n\r\n');
    const [data] = await once(socket, 'data');
    expect(String(data)).toMatch(/^HTTP\/1.1 200/);
    socket.destroy();
  });
});

describe('before the handshake', () => {
  let proxy: Proxy;
  let port: number;
  beforeAll(async () => ({ proxy, port } = await start({ passthrough: true, handshakeTimeoutMs: 5000, maxConnectionsPerSource: 3 })));
  afterAll(() => proxy.close());

  it('the per-source cap refuses the connection at accept, before any TLS byte', async () => {
    const held = [1, 2, 3].map(() => net.connect({ port, host: '127.0.3.10', localAddress: '127.0.3.10' }).on('error', () => {}));
    // connect to the proxy on 127.0.0.1, from 127.0.3.10
    for (const s of held) s.destroy();
    const open = await Promise.all([1, 2, 3].map(() => new Promise<net.Socket>((r) => { const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.3.10' }, () => r(s)); s.on('error', () => {}); })));
    await new Promise((r) => setTimeout(r, 50));
    expect(proxy.app.listeners.connections.count('127.0.3.10')).toBe(3);
    const ms = await stall(port, { localAddress: '127.0.3.10', waitMs: 2000 });
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThan(500);
    // Another source is not affected.
    expect((await get(port, 'a.test', { localAddress: '127.0.3.11' })).body).toBe('ok');
    for (const s of open) s.destroy();
  });

  it('a ban closes the source\'s half-open handshakes and refuses it at accept', async () => {
    const pending = stall(port, { localAddress: '127.0.3.12', waitMs: 3000 });
    await new Promise((r) => setTimeout(r, 100));
    (proxy.app.filter as unknown as { manualBan(s: string, ttl: number, why: string): unknown }).manualBan('127.0.3.12', 60, 'test');
    const ms = await pending;
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThan(1000);
    const refused = await stall(port, { localAddress: '127.0.3.12', waitMs: 2000 });
    expect(refused).toBeGreaterThanOrEqual(0);
    expect(refused).toBeLessThan(500);
  });
});

describe('under a flood of handshakes that never finish', () => {
  let proxy: Proxy;
  let port: number;
  beforeAll(async () => ({ proxy, port } = await start({ passthrough: true, handshakeTimeoutMs: 10000 })));
  afterAll(() => proxy.close());

  it('a legitimate HTTPS request is served in under a second while 200 idle handshakes are open', async () => {
    const idle: net.Socket[] = [];
    const hello = await clientHello('a.test');
    await Promise.all(Array.from({ length: 200 }, (_, i) => new Promise<void>((r) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: `127.0.4.${1 + (i % 50)}` }, () => {
        // Half of them send a ClientHello and stall mid-handshake, half send nothing.
        if (i % 2) s.write(hello);
        r();
      });
      s.on('error', () => r());
      s.on('data', () => {});
      idle.push(s);
    })));
    await new Promise((r) => setTimeout(r, 100));
    expect(idle.filter((s) => !s.destroyed)).toHaveLength(200);
    const t0 = Date.now();
    expect((await get(port, 'a.test', { localAddress: '127.0.4.200' })).body).toBe('ok');
    expect((await get(port, 'pass.test', { localAddress: '127.0.4.201' })).body).toBe('passed');
    expect(Date.now() - t0).toBeLessThan(1000);
    for (const s of idle) s.destroy();
  });
});

describe('session resumption', () => {
  let proxy: Proxy;
  let port: number;
  let raw: Record<string, unknown>;
  beforeAll(async () => ({ proxy, port, raw } = await start({ passthrough: false })));
  afterAll(() => proxy.close());

  function connect(session?: Buffer): Promise<{ reused: boolean; session: Promise<Buffer> }> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca: fs.readFileSync(pki.ca), session });
      const ticket = new Promise<Buffer>((r) => s.once('session', r));
      s.on('error', reject);
      s.once('secureConnect', () => {
        const reused = s.isSessionReused();
        // A resumed session may bring no new ticket: do not wait for one forever.
        void Promise.race([ticket, new Promise((r) => setTimeout(r, 300))]).then(() => s.end());
        resolve({ reused, session: ticket });
      });
    });
  }

  it('a returning client resumes its session, also after a config reload', async () => {
    const first = await connect();
    expect(first.reused).toBe(false);
    const ticket = await first.session;
    expect((await connect(ticket)).reused).toBe(true);
    const r = loadConfigObject({ listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0, token: '' }, log: { level: 'silent' }, ...raw, state: { dir: proxy.stateDir } }, {});
    if (!r.ok) throw new Error(r.problems.join('\n'));
    // The listen addresses must not move: take the running ones.
    r.config.listen = proxy.app.config.listen;
    r.config.tls.listen = proxy.app.config.tls.listen;
    expect(proxy.app.reload(r)).toEqual({ ok: true });
    expect((await connect(ticket)).reused).toBe(true);
  });
});
