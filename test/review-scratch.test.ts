import { afterAll, beforeAll, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { startProxy, rawExchange, domain, sleep, type Proxy } from './helpers/servers.ts';

let proxy: Proxy;
let up: net.Server; let upPort = 0;
let respond: (req: string, s: net.Socket) => void = () => {};
const seen: string[] = [];

beforeAll(async () => {
  up = net.createServer((s) => {
    let buf = '';
    s.on('error', () => {});
    s.on('data', (d) => { buf += d.toString('latin1'); const i = buf.indexOf('\r\n\r\n'); if (i >= 0) { const r = buf; seen.push(r); buf = ''; respond(r, s); } });
  });
  up.listen(0, '127.0.0.1'); await once(up, 'listening');
  upPort = (up.address() as net.AddressInfo).port;
  proxy = await startProxy({ filter: { mode: 'off' }, domains: [domain('site.test', [`127.0.0.1:${upPort}`])] });
});
afterAll(async () => { await proxy.close(); up.close(); });

function rawL1(port: number, data: Buffer, timeoutMs: number): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1'); const chunks: Buffer[] = [];
    const t = setTimeout(() => { c.destroy(); resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: false }); }, timeoutMs);
    c.on('connect', () => c.write(data)); c.on('data', (d) => chunks.push(d)); c.on('error', () => {});
    c.on('close', () => { clearTimeout(t); resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: true }); });
  });
}
async function probe(name: string, resp: string | ((r: string, s: net.Socket) => void), req: string, timeoutMs = 1500) {
  seen.length = 0;
  respond = typeof resp === 'string' ? (_r, s) => s.write(Buffer.from(resp, 'latin1')) : resp;
  const r = await rawL1(proxy.port, Buffer.from(req, 'latin1'), timeoutMs);
  console.log(`=== ${name}\n--- upstream saw (latin1):\n${JSON.stringify(seen)}\n--- client got (closed=${r.closed}, latin1):\n${JSON.stringify(r.text)}\n`);
}
const G = 'GET / HTTP/1.1\r\nHost: site.test\r\n\r\n';

it('probe', async () => {
  await probe('latin1 header', 'HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 2\r\n\r\nok', G);
  await probe('utf8 request header', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok', Buffer.from('GET / HTTP/1.1\r\nHost: site.test\r\nCookie: n=José 日本\r\n\r\n').toString('latin1'));
  await probe('utf8 url', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok', Buffer.from('GET /café HTTP/1.1\r\nHost: site.test\r\n\r\n').toString('latin1'));
}, 60000);
