// What statistics, billing and the stats API count, against SPEC §7 and the
// README, with a real proxy in-process, real upstreams (one a WebSocket echo)
// and real clients. Each failed on the code before 2026-11-29:
// - a WebSocket's tunnel bytes were never counted (only its handshake), so a
//   site whose traffic is WebSocket was billed next to nothing; now counted as
//   passed bytes every 10 s while the tunnel is open, and at its end;
// - the proxy's own answers (pages, challenges, refusals) counted 0 bytes out;
// - /api/stats read a from/to with junk after its date, a lower-case "t" or a
//   trailing blank through Date.parse (June 2024 for "2024-01-01 junk 10:00",
//   the server's time zone for the others);
// - `scrubber check` passed an empty state.dir the proxy cannot start with.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import { startOrigin, startProxy, request, domain, freePort, sleep, tempDir, type Origin, type Proxy } from './helpers/servers.ts';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** An upstream that accepts every WebSocket handshake and echoes every byte of the tunnel. */
async function startEchoWs(): Promise<{ address: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => { res.writeHead(200); res.end('plain'); });
  server.on('upgrade', (req, socket: net.Socket, head: Buffer) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    const acc = crypto.createHash('sha1').update(String(req.headers['sec-websocket-key']) + GUID).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acc}\r\n\r\n`);
    if (head.length) socket.write(head);
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () => { for (const s of sockets) s.destroy(); server.closeAllConnections(); return new Promise((r) => server.close(() => r())); },
  };
}

let good: Origin, ws: Awaited<ReturnType<typeof startEchoWs>>, proxy: Proxy, refused: string;

const api = async (p: string, method = 'GET') => {
  const r = await request(proxy.adminUrl + p, { method });
  return { status: r.status, text: r.body, body: (() => { try { return JSON.parse(r.body); } catch { return null; } })() };
};
const sum = (buckets: any[], f: (b: any) => number) => buckets.reduce((a, b) => a + f(b), 0);

beforeAll(async () => {
  good = await startOrigin();
  ws = await startEchoWs();
  refused = `127.0.0.1:${await freePort()}`;
  proxy = await startProxy({
    domains: [
      domain('a.test', [good.address]),
      domain('ws.test', [ws.address]),
      domain('down.test', [refused]),
    ],
  });
});
afterAll(async () => { await proxy?.close(); await good?.close(); await ws?.close(); });

/** A WebSocket through the proxy to the echo upstream: its 101 head, then `n` bytes sent and all echoed back. */
async function echoThrough(n: number, fill: number): Promise<{ s: net.Socket; head: string; got: number }> {
  const s = net.connect({ port: proxy.port, host: '127.0.0.1' });
  s.on('error', () => {});
  await once(s, 'connect');
  let got = 0, headDone = false, buf = Buffer.alloc(0);
  s.on('data', (c: Buffer) => {
    if (headDone) { got += c.length; return; }
    buf = Buffer.concat([buf, c]);
    const i = buf.indexOf('\r\n\r\n');
    if (i >= 0) { headDone = true; got += buf.length - i - 4; }
  });
  s.write(`GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  for (let i = 0; i < 300 && !headDone; i++) await sleep(10);
  s.write(Buffer.alloc(n, fill));
  for (let i = 0; i < 500 && got < n; i++) await sleep(10);
  return { s, head: buf.toString(), got };
}

describe('statistics and billing count every byte of passed traffic', () => {
  // SPEC §7: "Per domain, in 3-minute buckets: incoming, passed and dropped requests and bytes (in and out)" and
  // "each 3-minute sample's legitimate bandwidth is max(bytes in, bytes out) of passed traffic". SPEC §3: "WebSocket
  // upgrades are proxied." A WebSocket is passed traffic; its tunnel's bytes are never counted (only the handshake).
  it('a WebSocket tunnel\'s bytes show in /api/stats passed bytes, /metrics and the month\'s billing samples', async () => {
    const N = 256 * 1024;
    const { s, head, got } = await echoThrough(N, 0x61);
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    expect(got).toBe(N); // the tunnel carried N bytes each way
    s.end();
    await Promise.race([once(s, 'close'), sleep(3000)]);
    s.destroy();
    await sleep(300);

    const st = await api('/api/stats?domain=ws.test');
    expect(st.status).toBe(200);
    const b = st.body.buckets;
    expect(sum(b, (x) => x.passed.requests)).toBe(1);
    const passedIn = sum(b, (x) => x.passed.bytesIn), passedOut = sum(b, (x) => x.passed.bytesOut);
    // Counted now: the handshake's head (~170 bytes) in, 0 out.
    expect(passedIn).toBeGreaterThanOrEqual(N);
    expect(passedOut).toBeGreaterThanOrEqual(N);

    const bill = await api('/api/billing?domain=ws.test');
    const sampled = sum(bill.body.samples, (x) => Math.max(x.bytesIn, x.bytesOut));
    expect(sampled).toBeGreaterThanOrEqual(N);

    const m = (await api('/metrics')).text;
    const sent = Number(/scrubber_passed_sent_bytes_total\{domain="ws\.test"\} (\d+)/.exec(m)?.[1] ?? 0);
    expect(sent).toBeGreaterThanOrEqual(N);
  });

  it('a WebSocket still open counts its bytes as it goes (every 10 s), not only at its end', async () => {
    const N = 64 * 1024;
    const before = sum((await api('/api/stats?domain=ws.test')).body.buckets, (x) => x.passed.bytesOut);
    const { s, got } = await echoThrough(N, 0x62);
    expect(got).toBe(N);
    await sleep(10_500);
    const after = sum((await api('/api/stats?domain=ws.test')).body.buckets, (x) => x.passed.bytesOut);
    expect({ open: !s.destroyed, counted: after - before >= N }).toEqual({ open: true, counted: true });
    s.destroy();
  }, 20_000);

  // SPEC §7: incoming requests "and bytes (in and out)"; /metrics' own help for scrubber_sent_bytes_total:
  // "Response bytes sent, all requests." The proxy's own answers (here its 502 page) are counted with 0 bytes out.
  it('the bytes of the proxy\'s own answers (the 502 page) count in incoming bytes out and scrubber_sent_bytes_total', async () => {
    let pageBytes = 0;
    for (let i = 0; i < 3; i++) {
      const r = await request(proxy.url + '/', { headers: { host: 'down.test' } });
      expect(r.status).toBe(502);
      expect(r.headers['x-scrubber']).toBeTruthy();
      pageBytes += Buffer.byteLength(r.body);
    }
    expect(pageBytes).toBeGreaterThan(300);
    const st = await api('/api/stats?domain=down.test');
    expect(sum(st.body.buckets, (x) => x.proxyAnswered.requests)).toBe(3);
    const out = sum(st.body.buckets, (x) => x.incoming.bytesOut);
    const m = (await api('/metrics')).text;
    const sent = Number(/scrubber_sent_bytes_total\{domain="down\.test"\} (\d+)/.exec(m)?.[1] ?? 0);
    expect(out).toBeGreaterThanOrEqual(pageBytes);
    expect(sent).toBeGreaterThanOrEqual(pageBytes);
  });
});

describe('GET /api/stats: from/to', () => {
  // README: "Bad input (malformed address or CIDR, unknown domain, malformed month/from/to, bad JSON) gets 400 with
  // {"error": "..."}"; from/to "are Unix seconds or ISO 8601". parseTime (src/admin/query.ts) checks only that the
  // text starts with YYYY-MM-DD and hands the rest to Date.parse, whose legacy parser reads almost anything.
  it('a from that is not ISO 8601 after its date ("2024-01-01 junk 10:00") is a 400, not read as June 2024', async () => {
    const r = await api(`/api/stats?domain=a.test&from=${encodeURIComponent('2024-01-01 junk 10:00')}&to=${encodeURIComponent('2024-12-31T00:00:00Z')}`);
    expect({ status: r.status, from: r.body?.from }).toEqual({ status: 400, from: undefined });
    expect(r.body.error).toMatch(/from/);
  });

  // README: "a time without an offset is UTC, as the buckets are, whatever the server's time zone". RFC 3339 (5.6) allows
  // a lower-case "t"; a trailing blank (from=2024-01-01+ in a hand-written URL) is the same date. Both are read in the
  // server's time zone: on a server in New York, 5 hours off.
  it('a from without an offset is UTC whatever the server\'s time zone (lower-case t, a trailing blank)', async () => {
    const saved = process.env.TZ;
    process.env.TZ = 'America/New_York';
    try {
      const got: Record<string, unknown> = {};
      for (const v of ['2024-01-01t10:00:00', '2024-01-01 ']) {
        const r = await api(`/api/stats?domain=a.test&from=${encodeURIComponent(v)}&to=${encodeURIComponent('2024-01-02T00:00:00Z')}`);
        // Either refused (400) or read as UTC; never the server's local time.
        got[v] = r.status === 400 ? 'refused' : r.body.from;
      }
      const utc = { '2024-01-01t10:00:00': Date.UTC(2024, 0, 1, 10) / 1000, '2024-01-01 ': Date.UTC(2024, 0, 1) / 1000 };
      for (const [k, v] of Object.entries(got)) if (v === 'refused') got[k] = utc[k as keyof typeof utc];
      expect(got).toEqual(utc);
    } finally {
      if (saved === undefined) delete process.env.TZ; else process.env.TZ = saved;
    }
  });
});

describe('scrubber check', () => {
  // SPEC §1: "`scrubber check --config FILE` validates a config: exit 0, or exit 2 with one line per problem naming the
  // key". An empty state.dir passes the check ("ok", exit 0) and the same file then fails to start (exit 1,
  // "state.dir: cannot create the folder : ENOENT ... mkdir ''").
  it('refuses an empty state.dir that the proxy cannot start with', async () => {
    const dir = tempDir('scrubber-accounting-');
    const file = path.join(dir, 'c.json');
    const port = await freePort(), admin = await freePort();
    fs.writeFileSync(file, JSON.stringify({
      listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, state: { dir: '' }, log: { level: 'warn' },
      domains: [{ name: 'a.test', upstreams: [good.address] }],
    }));
    const bin = path.resolve('bin/scrubber.js');
    const check = spawnSync(process.execPath, [bin, 'check', '--config', file], { cwd: dir, encoding: 'utf8', timeout: 15_000 });
    const run = spawnSync(process.execPath, [bin, '--config', file], { cwd: dir, encoding: 'utf8', timeout: 4000, killSignal: 'SIGTERM' });
    // The start refuses it, naming the key; so does check (it said "ok", exit 0).
    expect({ run: run.status, check: check.status }).toEqual({ run: 2, check: 2 });
    expect(run.stderr + run.stdout).toMatch(/state\.dir/);
    expect(check.stdout).toMatch(/^state\.dir/m);
  }, 30_000);
});
