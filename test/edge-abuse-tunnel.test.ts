// Tunnels (issue 12, item 1): two real sockets spliced by src/upstream/tunnel.ts. A front server splices each
// client to a real upstream server; the tests look at what each end receives and whether any socket is left.
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sleep, until } from './helpers/servers.ts';
import { Tunnels, type Tunnel, type TunnelEnd, type TunnelOptions } from '../src/upstream/tunnel.ts';

/** How the upstream treats each connection: set per test. */
let upstreamBehaviour: (s: net.Socket) => void = () => {};
let upstreamServer: net.Server;
let upstreamPort: number;
const upstreamSockets = new Set<net.Socket>();
/** The tunnels' upstream-side sockets (the front's connections to the upstream): what must not linger. */
const frontUps = new Set<net.Socket>();

let front: net.Server;
let frontPort: number;
let tunnels: Tunnels;
let tunnelOpts: Omit<TunnelOptions, 'onEnd'> = { idleTimeoutMs: 0 };
const ends: { t: Tunnel; why: TunnelEnd; at: number }[] = [];
const clients: net.Socket[] = [];

beforeAll(async () => {
  // allowHalfOpen: a peer that received a FIN keeps its own half open until it decides (as a real server may).
  upstreamServer = net.createServer({ allowHalfOpen: true }, (s) => {
    upstreamSockets.add(s);
    s.on('close', () => upstreamSockets.delete(s));
    s.on('error', () => {});
    upstreamBehaviour(s);
  }).listen(0, '127.0.0.1');
  await once(upstreamServer, 'listening');
  upstreamPort = (upstreamServer.address() as net.AddressInfo).port;

  tunnels = new Tunnels();
  front = net.createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', () => {});
    const up = net.connect({ port: upstreamPort, host: '127.0.0.1', allowHalfOpen: true });
    up.on('error', () => {});
    frontUps.add(up);
    up.on('close', () => frontUps.delete(up));
    up.once('connect', () => tunnels.add(client, up, { ...tunnelOpts, onEnd: (t, why) => ends.push({ t, why, at: performance.now() }) }));
  }).listen(0, '127.0.0.1');
  await once(front, 'listening');
  frontPort = (front.address() as net.AddressInfo).port;
});
afterEach(async () => {
  for (const c of clients) c.destroy();
  clients.length = 0;
  tunnels.closeAll();
  // onEnd comes with the sockets' 'close' events: wait for them, so no test sees the last one's ends.
  for (const s of upstreamSockets) s.destroy();
  await until(() => tunnels.size === 0 && frontUps.size === 0, 2000);
  await sleep(20);
  ends.length = 0;
});
afterAll(async () => {
  tunnels.closeAll();
  for (const s of upstreamSockets) s.destroy();
  front.close();
  upstreamServer.close();
});

/** A client of the front server, collecting what it receives. */
async function connect(opts: { allowHalfOpen?: boolean } = {}) {
  const s = net.connect({ port: frontPort, host: '127.0.0.1', allowHalfOpen: opts.allowHalfOpen ?? false });
  clients.push(s);
  s.on('error', () => {});
  let text = '';
  let ended = false;
  let closed = false;
  s.on('data', (c) => { text += c; });
  s.on('end', () => { ended = true; });
  s.on('close', () => { closed = true; });
  await once(s, 'connect');
  await until(() => tunnels.size > 0 || ends.length > 0, 2000);
  return { s, text: () => text, ended: () => ended, closed: () => closed };
}

/** Sockets still open on the front server (client side of the tunnels). */
const frontConnections = () => new Promise<number>((r) => front.getConnections((_e, n) => r(n)));

describe('splicing', () => {
  it('carries bytes both ways and counts them', async () => {
    tunnelOpts = { idleTimeoutMs: 0 };
    let echo = true;
    upstreamBehaviour = (s) => s.on('data', (c) => s.write(echo ? `echo:${c}` : c));
    const c = await connect();
    c.s.write('hello');
    expect(await until(() => c.text() === 'echo:hello', 2000)).toBe(true);
    const big = Buffer.alloc(4 * 1024 * 1024, 'z');
    echo = false;
    c.s.write(big);
    expect(await until(() => c.text().length >= 5 + big.length, 5000)).toBe(true);
    const [t] = (tunnels as unknown as { open: Set<Tunnel> }).open;
    expect(t.bytesUp).toBe(5 + big.length);
    expect(t.bytesDown).toBe(5 + 5 + big.length);
  });

  it('an upstream reset closes the client', async () => {
    tunnelOpts = { idleTimeoutMs: 0 };
    upstreamBehaviour = (s) => setTimeout(() => s.resetAndDestroy(), 50);
    const c = await connect();
    expect(await until(() => c.closed(), 2000)).toBe(true);
    expect(await until(() => tunnels.size === 0, 1000)).toBe(true);
    expect(ends[0].why).toBe('error');
  });
});

describe('idle timeout', () => {
  it('no byte either way for idleTimeoutMs → both sockets destroyed', async () => {
    tunnelOpts = { idleTimeoutMs: 250 };
    upstreamBehaviour = () => {};
    const t0 = performance.now();
    const c = await connect();
    expect(await until(() => c.closed(), 2000)).toBe(true);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(240);
    expect(took).toBeLessThan(700);
    expect(await until(() => ends.length === 1 && frontUps.size === 0, 1000)).toBe(true);
    expect(ends[0].why).toBe('idle');
    expect(await frontConnections()).toBe(0);
  });

  it('traffic in either direction keeps it open', async () => {
    tunnelOpts = { idleTimeoutMs: 250 };
    // The upstream talks every 100 ms for a while; the client never says a word.
    upstreamBehaviour = (s) => { let n = 0; const i = setInterval(() => { if (++n > 8 || s.destroyed) return clearInterval(i); s.write('.'); }, 100); };
    const c = await connect();
    await sleep(700);
    expect(c.closed()).toBe(false);
    expect(c.text()).toMatch(/^\.{5,}/);
    // Then silence: the idle timeout applies.
    expect(await until(() => c.closed(), 1500)).toBe(true);
    expect(ends[0].why).toBe('idle');
  });
});

describe('half-close', () => {
  it('client FIN, the upstream keeps its half open → both destroyed after the grace, nothing left', async () => {
    tunnelOpts = { idleTimeoutMs: 0, halfCloseGraceMs: 300 };
    let upstreamSawEnd = false;
    upstreamBehaviour = (s) => s.on('end', () => { upstreamSawEnd = true; });
    const c = await connect();
    const t0 = performance.now();
    c.s.end();
    expect(await until(() => upstreamSawEnd, 1000)).toBe(true);
    expect(await until(() => c.closed(), 2000)).toBe(true);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(280);
    expect(took).toBeLessThan(900);
    expect(await until(() => frontUps.size === 0, 1000)).toBe(true);
    expect(await frontConnections()).toBe(0);
    expect(ends[0].why).toBe('half-close-timeout');
  });

  it('client FIN, the upstream answers and ends → the answer arrives whole, the tunnel closes cleanly before the grace', async () => {
    tunnelOpts = { idleTimeoutMs: 0, halfCloseGraceMs: 2000 };
    upstreamBehaviour = (s) => {
      let got = '';
      s.on('data', (c) => { got += c; });
      s.on('end', () => { s.end(`bye after ${got}`); });
    };
    const c = await connect();
    c.s.end('last words');
    expect(await until(() => c.closed(), 1500)).toBe(true);
    expect(c.text()).toBe('bye after last words');
    expect(c.ended()).toBe(true);
    expect(await until(() => ends.length === 1, 1000)).toBe(true);
    expect(ends[0].why).toBe('closed');
  });

  it('upstream FIN while the client keeps its half open → bounded the same way', async () => {
    tunnelOpts = { idleTimeoutMs: 0, halfCloseGraceMs: 300 };
    upstreamBehaviour = (s) => s.end('done');
    const c = await connect({ allowHalfOpen: true });
    expect(await until(() => c.ended(), 1000)).toBe(true);
    expect(c.text()).toBe('done');
    // The client never closes its half: the tunnel's side of it is destroyed after the grace all the same.
    expect(await until(() => ends.length === 1, 1500)).toBe(true);
    expect(ends[0].why).toBe('half-close-timeout');
    expect(await frontConnections()).toBe(0);
  });
});

describe('the registry', () => {
  it('closeAll() destroys every open tunnel at once', async () => {
    tunnelOpts = { idleTimeoutMs: 0 };
    upstreamBehaviour = () => {};
    const cs = [await connect(), await connect(), await connect()];
    expect(await until(() => tunnels.size === 3, 1000)).toBe(true);
    expect(tunnels.closeAll()).toBe(3);
    expect(await until(() => cs.every((c) => c.closed()), 1000)).toBe(true);
    expect(await until(() => ends.length === 3 && frontUps.size === 0, 1000)).toBe(true);
    expect(ends.map((e) => e.why)).toEqual(['shutdown', 'shutdown', 'shutdown']);
    expect(tunnels.size).toBe(0);
  });

  it('a socket already closed when added ends the tunnel at once', async () => {
    const a = new net.Socket();
    a.destroy();
    await sleep(10);
    const b = net.connect({ port: upstreamPort, host: '127.0.0.1' });
    b.on('error', () => {});
    await once(b, 'connect');
    let why: TunnelEnd | null = null;
    const reg = new Tunnels();
    reg.add(a, b, { idleTimeoutMs: 0, onEnd: (_t, w) => { why = w; } });
    expect(await until(() => why !== null && b.destroyed, 1000)).toBe(true);
    expect(reg.size).toBe(0);
  });
});
