// A TLS passthrough splice passes a half-close on in either direction: an
// upstream that closes its sending side first (a FIN, still reading) still
// gets what the client sends after it. The proxy's socket to the upstream was
// made with Node's default allowHalfOpen off, which ended our side at the
// upstream's FIN; the client's later bytes then destroyed the tunnel (failed
// on the code before 2026-11-29). A real proxy in-process, a plain TCP
// upstream seen from below TLS, a captured ClientHello.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { startProxy, domain, until, sleep, type Proxy } from './helpers/servers.ts';
import { capturedClientHello } from './helpers/certs.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

/** A plain TCP "upstream" (a TLS server's socket, seen from below): records what it got, reacts per test. */
async function tcpUpstream(onConn: (s: net.Socket, got: () => Buffer) => void): Promise<{ address: string; received: Buffer[]; ended: boolean[] }> {
  const received: Buffer[] = [];
  const ended: boolean[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const i = received.push(Buffer.alloc(0)) - 1;
    ended.push(false);
    s.on('error', () => {});
    s.on('data', (b: Buffer) => { received[i] = Buffer.concat([received[i], b]); });
    s.on('end', () => { ended[i] = true; });
    onConn(s, () => received[i]);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((r) => { server.close(r); for (const c of conns) c.destroy(); }));
  const conns: net.Socket[] = [];
  server.on('connection', (s) => conns.push(s));
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, received, ended };
}

async function passProxy(upstreams: string[], extra: Record<string, unknown> = {}): Promise<{ proxy: Proxy; port: number }> {
  const proxy = await startProxy({
    tls: { listen: [{ host: '127.0.0.1', port: 0 }] },
    upstream: { connectTimeoutMs: 500, connectAttempts: 1 },
    domains: [domain('pass.test', upstreams, { passthrough: true })],
    ...extra,
  });
  cleanups.push(() => proxy.close());
  return { proxy, port: proxy.app.listeners.addresses().find((x) => x.tls)!.port };
}

describe('TLS passthrough splice: half-close', () => {
  it('an upstream that half-closes (FIN, still reading) still gets what the client sends after it, as the client\'s FIN is passed on', async () => {
    const hello = await capturedClientHello('pass.test');
    // The upstream answers once it has the ClientHello, then shuts its sending side and keeps reading
    // (a TLS 1.3 server may send close_notify + FIN and still read: RFC 8446 §6.1 makes each side's close independent).
    const up = await tcpUpstream((s, got) => {
      s.on('data', () => { if (got().length >= hello.length && !s.writableEnded) s.end('DOWN'); });
    });
    const { port } = await passProxy([up.address]);
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    c.on('error', () => {});
    let down = '';
    let clientEnded = false;
    c.on('data', (b) => { down += b; });
    c.on('end', () => { clientEnded = true; });
    c.write(hello);
    expect(await until(() => clientEnded, 3000)).toBe(true);
    expect(down).toBe('DOWN');
    // The client, told of the upstream's FIN, sends its last bytes and its own FIN.
    c.end('UP-AFTER-FIN');
    await until(() => up.ended[0] === true, 3000);
    await sleep(100);
    c.destroy();
    // What the client sent after the upstream's FIN reached the upstream, and the upstream's FIN came only then.
    expect(up.received[0].subarray(hello.length).toString()).toBe('UP-AFTER-FIN');
  });
});
