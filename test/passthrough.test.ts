// TLS passthrough: by the ClientHello's SNI, on the same listener as the
// terminated domains, the connection goes undecrypted to the domain's
// upstreams (so the client sees the upstream's certificate, never the
// proxy's), with failover at connect and an optional PROXY v2 header.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { startOrigin, startProxy, domain, freePort, type Origin, type Proxy } from './helpers/servers.ts';
import { capturedClientHello, makePki, type TestPki } from './helpers/certs.ts';
import { loadConfigObject } from '../src/config/load.ts';

let pki: TestPki;
let origin: Origin;
let proxy: Proxy;
let tlsPort: number;
/** TCP connections the pass.test upstream accepted. */
let passConnections = 0;
const closers: (() => void)[] = [];
/** Client addresses the PROXY-protocol upstream was told, in order. */
const told: { family: number; source: string; sourcePort: number; destPort: number }[] = [];

function tlsOrigin(name: string, body: string): Promise<{ address: string; server: https.Server }> {
  const c = pki.leaf(name);
  const server = https.createServer({ cert: fs.readFileSync(c.cert), key: fs.readFileSync(c.key) }, (_q, r) => r.end(body));
  server.listen(0, '127.0.0.1');
  closers.push(() => { server.closeAllConnections(); server.close(); });
  return once(server, 'listening').then(() => ({ address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, server }));
}

/** A TLS origin behind a PROXY v2 reader (as HAProxy or nginx `proxy_protocol` would be). */
async function proxyProtocolOrigin(name: string): Promise<string> {
  const inner = await tlsOrigin(name, 'behind proxy protocol');
  const front = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length < 16) return;
      const len = buf.readUInt16BE(14);
      if (buf.length < 16 + len) return;
      s.off('data', onData);
      s.pause();
      expect(buf.subarray(0, 13).toString('latin1')).toBe('\r\n\r\n\0\r\nQUIT\n\x21');
      const fam = buf[13];
      const a = buf.subarray(16, 16 + len);
      if (fam === 0x11) told.push({ family: 4, source: [...a.subarray(0, 4)].join('.'), sourcePort: a.readUInt16BE(8), destPort: a.readUInt16BE(10) });
      else told.push({ family: fam, source: '', sourcePort: 0, destPort: 0 });
      s.unshift(buf.subarray(16 + len));
      inner.server.emit('connection', s);
    };
    s.on('data', onData);
  });
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  closers.push(() => front.close());
  return `127.0.0.1:${(front.address() as net.AddressInfo).port}`;
}

beforeAll(async () => {
  pki = makePki();
  const own = pki.leaf('a.test');
  origin = await startOrigin((req, res) => res.end(String(req.headers['x-forwarded-proto'])));
  const pass = await tlsOrigin('pass.test', 'from the upstream itself');
  pass.server.on('connection', () => { passConnections++; });
  const failover = await tlsOrigin('fo.test', 'second upstream');
  const pp = await proxyProtocolOrigin('pp.test');
  const refused = `127.0.0.1:${await freePort()}`;
  proxy = await startProxy({
    tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...own }] },
    upstream: { connectTimeoutMs: 500, connectAttempts: 1 },
    domains: [
      domain('a.test', [origin.address]),
      domain('pass.test', [pass.address], { passthrough: true, aliases: ['www.pass.test'] }),
      domain('fo.test', [refused, failover.address], { passthrough: true }),
      domain('pp.test', [pp], { passthrough: true, proxyProtocol: 'v2' }),
    ],
  });
  tlsPort = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
});
afterAll(async () => { await proxy.close(); await origin.close(); for (const c of closers) c(); });

function run(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 10000 }, (err, stdout, stderr) => resolve({ stdout, stderr, code: err ? Number((err as NodeJS.ErrnoException).code ?? 1) : 0 }));
    child.stdin?.end();
  });
}

/** GET / over TLS with the given SNI; the certificate's subject and the body. */
function get(servername: string, localAddress?: string): Promise<{ cn: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: tlsPort, servername, localAddress, headers: { host: servername }, ca: fs.readFileSync(pki.ca), agent: false }, (res) => {
      const cn = String((res.socket as tls.TLSSocket).getPeerCertificate().subject?.CN);
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ cn, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('TLS passthrough', () => {
  it('openssl s_client sees the upstream\'s certificate, not the proxy\'s', async () => {
    const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${tlsPort}`, '-servername', 'pass.test', '-CAfile', pki.ca]);
    expect(r.stdout).toMatch(/subject=\s*CN\s*=\s*pass\.test/);
    expect(r.stdout).not.toMatch(/CN\s*=\s*a\.test/);
    expect(r.stdout).toMatch(/Verify return code: 0 \(ok\)/);
  });

  it('curl --resolve reaches the upstream\'s HTTPS server through the proxy', async () => {
    const r = await run('curl', ['-sS', '--cacert', pki.ca, '--resolve', `pass.test:${tlsPort}:127.0.0.1`, `https://pass.test:${tlsPort}/`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('from the upstream itself');
  });

  it('an alias of a passthrough domain is passed through too', async () => {
    const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${tlsPort}`, '-servername', 'www.pass.test']);
    expect(r.stdout).toMatch(/subject=\s*CN\s*=\s*pass\.test/);
  });

  it('a domain that is not passthrough, on the same port, is still terminated by the proxy', async () => {
    expect(await get('a.test')).toEqual({ cn: 'a.test', body: 'https' });
    const r = await run('curl', ['-sS', '--cacert', pki.ca, '--resolve', `a.test:${tlsPort}:127.0.0.1`, `https://a.test:${tlsPort}/`]);
    expect(r.stdout).toBe('https');
  });

  it('fails over to the second upstream when the first refuses', async () => {
    expect(await get('fo.test')).toEqual({ cn: 'fo.test', body: 'second upstream' });
    expect(await get('fo.test')).toEqual({ cn: 'fo.test', body: 'second upstream' });
  });

  it('sends the PROXY v2 header with the client\'s address first', async () => {
    told.length = 0;
    expect(await get('pp.test', '127.0.0.7')).toEqual({ cn: 'pp.test', body: 'behind proxy protocol' });
    expect(told).toHaveLength(1);
    expect(told[0]).toMatchObject({ family: 4, source: '127.0.0.7', destPort: tlsPort });
  });

  it('counts the connection against its source at accept', async () => {
    const seen: string[] = [];
    const d = proxy.app.filter.detector;
    const orig = d.onConnection.bind(d);
    d.onConnection = (src) => { seen.push(src); return orig(src); };
    try { await get('pass.test', '127.0.0.9'); } finally { d.onConnection = orig; }
    expect(seen).toEqual(['127.0.0.9']);
  });
});

describe('a ClientHello dripped in tiny TLS records', () => {
  // Each record carries one byte of the handshake message: reassembling them cost the proxy time quadratic in their
  // number. A real hello that names a passthrough domain, so that the old code ended by passing it upstream.
  it('is closed after a few records, never reaches the upstream; a real client still passes through', async () => {
    const hello = await capturedClientHello('pass.test');
    const msg = hello.subarray(5, 5 + hello.readUInt16BE(3));
    const before = passConnections;
    const s = net.connect({ port: tlsPort, host: '127.0.0.1', noDelay: true });
    s.on('error', () => {});
    s.on('data', () => {});
    let closed = false;
    s.on('close', () => { closed = true; });
    await once(s, 'connect');
    let sent = 0;
    for (; sent < msg.length && !closed; sent++) {
      await new Promise((r) => s.write(Buffer.from([0x16, 3, 1, 0, 1, msg[sent]]), r));
      await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(closed).toBe(true);
    expect(sent).toBeLessThan(Math.min(200, msg.length));
    expect(passConnections).toBe(before);
    s.destroy();
    expect(await get('pass.test')).toEqual({ cn: 'pass.test', body: 'from the upstream itself' });
    expect(passConnections).toBe(before + 1);
  });
});

describe('passthrough config', () => {
  const check = (raw: Record<string, unknown>) => { const r = loadConfigObject({ log: { level: 'silent' }, ...raw }, {}); return r.ok ? [] : r.problems; };
  it('a passthrough domain needs a TLS listener; proxyProtocol is for passthrough domains only', () => {
    expect(check({ domains: [{ name: 'p.test', upstreams: ['127.0.0.1:1'], passthrough: true }] }))
      .toContain('domains[0].passthrough: needs a TLS listener (tls.listen)');
    expect(check({ domains: [{ name: 'p.test', upstreams: ['127.0.0.1:1'], proxyProtocol: 'v2' }] }))
      .toContain('domains[0].proxyProtocol: only for passthrough domains');
    expect(check({ domains: [{ name: 'p.test', upstreams: ['127.0.0.1:1'], passthrough: true, proxyProtocol: 'v1' }] }))
      .toContain('domains[0].proxyProtocol: must be "none" or "v2"');
  });
  it('a TLS listener that only passes through needs no certificate', () => {
    expect(check({ tls: { listen: [{ host: '127.0.0.1', port: 0 }] }, domains: [{ name: 'p.test', upstreams: ['127.0.0.1:1'], passthrough: true, proxyProtocol: 'v2' }] })).toEqual([]);
  });
});
