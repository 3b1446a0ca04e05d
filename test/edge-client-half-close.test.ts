// A client that sends its request (or several, pipelined) and then shuts down
// its sending side — a half-close: `printf … | nc -N`, Node's socket.end(data),
// Python's shutdown(SHUT_WR) — still reads: it is owed the answers to what it
// sent, and then the connection closes. HAProxy answers it so (its
// abortonclose is off by default). Node's http server aborts every request of
// the connection on the client's FIN unless told otherwise, so the proxy
// forwarded the request (or not) and the client got nothing. Each test runs a
// real proxy (in-process, or the CLI with two worker processes) in front of a
// real origin that answers after a pause, so that the FIN is in before the
// answer; the first four failed on the code before 2026-11-29.
// A request still waiting for its turn in a saturated domain's queue when its
// client half-closes is dropped, as before (a client that gave up is not sent
// to an origin that has no room): the last test holds that.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { startOrigin, startProxy, startWorkersCli, domain, sleep, until, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

const HOST = 'site.test';
let origin: Origin;
const seen: string[] = [];
beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    seen.push(req.url ?? '');
    const ms = /^\/slow\/(\d+)/.exec(req.url ?? '')?.[1];
    setTimeout(() => {
      if (res.destroyed) return;
      const body = `answer ${req.url}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }, Number(ms ?? 0));
  });
});
afterAll(() => origin.close());

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: half-close-test\r\n\r\n`;

/** Sends `data`, half-closes at once, and reads until the proxy closes (or the time is up). */
function halfClose(connect: () => net.Socket, data: string, timeoutMs = 4000): Promise<{ text: string; closedByProxy: boolean }> {
  return new Promise((resolve) => {
    const s = connect();
    let text = '';
    const t = setTimeout(() => { s.destroy(); resolve({ text, closedByProxy: false }); }, timeoutMs);
    s.on('error', () => {});
    s.on('data', (c) => { text += c; });
    s.on('close', () => { clearTimeout(t); resolve({ text, closedByProxy: true }); });
    s.end(data);
  });
}

/** "status body" of each response in the bytes read (every answer here has a Content-Length). */
function answers(text: string): string[] {
  const out: string[] = [];
  while (text.startsWith('HTTP/1.1 ')) {
    const end = text.indexOf('\r\n\r\n');
    if (end < 0) break;
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
    out.push(`${text.slice(9, 12)} ${text.slice(end + 4, end + 4 + len)}`.trim());
    text = text.slice(end + 4 + len);
  }
  return out;
}

describe('plain HTTP, one process', () => {
  let proxy: Proxy;
  beforeAll(async () => { proxy = await startProxy({ filter: { mode: 'off' }, domains: [domain(HOST, [origin.address])] }); });
  afterAll(() => proxy.close());
  const connect = (ip: string) => () => net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: ip });

  it('a request followed by the client\'s FIN gets its answer, then the connection closes', async () => {
    const r = await halfClose(connect('127.0.32.1'), get('/slow/150'));
    expect({ answers: answers(r.text), closed: r.closedByProxy }).toEqual({ answers: ['200 answer /slow/150'], closed: true });
  });

  it('two pipelined requests followed by the FIN get both answers, in order', async () => {
    const r = await halfClose(connect('127.0.32.2'), get('/slow/150?a') + get('/slow/50?b'));
    expect({ answers: answers(r.text), closed: r.closedByProxy }).toEqual({ answers: ['200 answer /slow/150?a', '200 answer /slow/50?b'], closed: true });
  });
});

describe('HTTPS (HTTP/1.1 over TLS)', () => {
  let pki: TestPki;
  let proxy: Proxy;
  beforeAll(async () => {
    pki = makePki();
    proxy = await startProxy({
      filter: { mode: 'off' },
      tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: [HOST], ...pki.leaf(HOST) }] },
      domains: [domain(HOST, [origin.address])],
    });
  });
  afterAll(() => proxy.close());

  it('a request followed by the client\'s close_notify and FIN gets its answer', async () => {
    const port = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
    const r = await halfClose(() => tls.connect({ socket: net.connect({ port, host: '127.0.0.1', localAddress: '127.0.32.3' }), servername: HOST, ca: fs.readFileSync(pki.ca), ALPNProtocols: ['http/1.1'] }), get('/slow/150'));
    expect({ answers: answers(r.text), closed: r.closedByProxy }).toEqual({ answers: ['200 answer /slow/150'], closed: true });
  });
});

describe('two worker processes (the connection is handed over by the primary)', () => {
  let cli: Awaited<ReturnType<typeof startWorkersCli>>;
  beforeAll(async () => { cli = await startWorkersCli(HOST, origin.address, { filter: { mode: 'off' } }); }, 20_000);
  afterAll(async () => { await cli?.stop(); });

  it('a request followed by the client\'s FIN gets its answer', async () => {
    const r = await halfClose(() => net.connect({ port: cli.port, host: '127.0.0.1', localAddress: '127.0.32.4' }), get('/slow/150'));
    expect({ answers: answers(r.text), closed: r.closedByProxy }).toEqual({ answers: ['200 answer /slow/150'], closed: true });
  });
});

describe('a saturated domain', () => {
  let proxy: Proxy;
  beforeAll(async () => { proxy = await startProxy({ filter: { mode: 'off' }, limits: { adaptive: { enabled: false } }, domains: [domain(HOST, [origin.address], { maxInflight: 1 })] }); });
  afterAll(() => proxy.close());

  it('a request still waiting for its turn when its client half-closes is dropped, not sent to the origin later', async () => {
    // One request holds the only slot for 800 ms; the half-closed one waits behind it.
    const holder = halfClose(() => net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: '127.0.32.5' }), get('/slow/800?holder'));
    await until(() => seen.includes('/slow/800?holder'), 2000);
    const waiting = await halfClose(() => net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: '127.0.32.6' }), get('/slow/0?gave-up'), 3000);
    expect(answers((await holder).text)).toEqual(['200 answer /slow/800?holder']);
    await sleep(300);
    expect({ closedByProxy: waiting.closedByProxy, forwarded: seen.includes('/slow/0?gave-up') }).toEqual({ closedByProxy: true, forwarded: false });
  });
});
