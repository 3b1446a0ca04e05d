// The send deadline (src/upstream/slow-client.ts) on real sockets: it runs only for a response that had to wait for
// its client. Node corks a response's socket from its first write to the next tick, so a write always leaves bytes
// "waiting" for an instant; a timer armed then costs every response a timer and two listeners for nothing.
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { SendDeadline } from '../src/upstream/slow-client.ts';
import { sleep } from './helpers/servers.ts';

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

let server: http.Server | null = null;
afterEach(() => { server?.closeAllConnections(); server?.close(); server = null; });

async function serve(handler: http.RequestListener): Promise<number> {
  server = http.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

describe('send deadline', () => {
  it('a small response to a client that reads arms no timer, though its first write is corked', async () => {
    const armed: number[] = [];
    const port = await serve((_q, res) => {
      const d = new SendDeadline(res, 60_000, { onStalled: () => {} });
      const before = timers();
      const closeListeners = res.listenerCount('close');
      res.writeHead(200, { 'content-length': 5 });
      res.write('hello');
      d.wrote(5);
      armed.push(timers() - before); // synchronous: no other code ran in between
      res.end();
      d.wrote(0);
      // After the uncork: a deadline armed at any point would have left its 'close' listener (Node's own keep-alive
      // timer may be there by then, so timers are not counted here).
      process.nextTick(() => armed.push(res.listenerCount('close') - closeListeners));
    });
    const body = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    expect(body).toBe('hello');
    expect(armed).toEqual([0, 0]);
  });

  it('a first chunk too large for the socket, then silence, to a client that reads nothing: cut after the deadline', async () => {
    let stalled = 0;
    let closed = false;
    const port = await serve((_q, res) => {
      const d = new SendDeadline(res, 300, { onStalled: () => { stalled++; } });
      res.on('close', () => { closed = true; });
      res.writeHead(200, { 'content-length': 64 << 20 });
      // One write larger than what the kernel absorbs (a few MiB on loopback), made while the socket is corked;
      // no later write or end comes to re-arm anything.
      const n = 16 << 20;
      res.write(Buffer.alloc(n));
      d.wrote(n);
    });
    const s = net.connect({ port, host: '127.0.0.1' });
    await once(s, 'connect');
    s.pause();
    s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    for (let i = 0; i < 40 && !closed; i++) await sleep(50);
    s.destroy();
    expect(stalled).toBe(1);
    expect(closed).toBe(true);
  });
});
