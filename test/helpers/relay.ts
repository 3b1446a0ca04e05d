// A loopback TCP relay in front of a real Redis, to take a node's link away in the ways a network does: cut (reset,
// new connections refused), frozen (open, nothing passes: a link that died silently, no RST), slow.
import net from 'node:net';
import { once } from 'node:events';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  for (const end = Date.now() + timeoutMs; !cond(); await sleep(10)) if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A loopback TCP relay to Redis that can cut a node off (connections reset, new ones refused) or freeze it
 *  (connections stay open, nothing passes: a link that died silently). */
export async function relay(targetPort: number) {
  const socks = new Set<net.Socket>();
  let frozen = false;
  let lag = 0;
  // With a lag, bytes go on after it (in order: timers of one delay fire in the order they were set).
  const pass = (to: net.Socket, d: Buffer) => { if (frozen) return; if (lag) setTimeout(() => { if (!frozen && !to.destroyed) to.write(d); }, lag); else to.write(d); };
  let subLag = 0;
  let watcher: ((sent: string) => void) | null = null;
  const subscribers = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const u = net.connect({ port: targetPort, host: '127.0.0.1' });
    socks.add(c); socks.add(u);
    let subscriber = false; // this connection asked to SUBSCRIBE: what Redis sends it can be held back alone
    c.on('data', (d) => { subscriber ||= /subscribe/i.test(d.toString('latin1')); if (subscriber) subscribers.add(c); watcher?.(d.toString('latin1')); pass(u, d); });
    u.on('data', (d) => { if (subscriber && subLag) setTimeout(() => { if (!frozen && !c.destroyed) c.write(d); }, subLag); else pass(c, d); });
    const end = () => { c.destroy(); u.destroy(); socks.delete(c); socks.delete(u); };
    c.on('close', end); u.on('close', end); c.on('error', end); u.on('error', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const cut = async () => { await new Promise<void>((r) => { server.close(() => r()); for (const s of socks) s.destroy(); }); };
  return {
    url: `redis://127.0.0.1:${port}`,
    cut,
    /** Cut, and wait until the bus behind this relay knows it. */
    cutOff: async (bus: { readonly healthy: boolean }) => { await cut(); await waitFor('cut off', () => !bus.healthy, 3000); },
    heal: async () => { server.listen(port, '127.0.0.1'); await once(server, 'listening'); },
    freeze: () => { frozen = true; },
    /** Every byte each way waits this long (a slow link: a catch-up then takes seconds). */
    setLag: (ms: number) => { lag = ms; },
    /** What Redis sends the subscriber connection (published messages) waits this long; commands' answers do not. */
    lagSubscriber: (ms: number) => { subLag = ms; },
    /** Resets the subscriber's connection only (the bus reconnects it and catches up; its commands go on). */
    dropSubscriber: () => { for (const c of subscribers) c.destroy(); subscribers.clear(); },
    /** Sees what a client sends, as it passes (before any lag). */
    watch: (fn: ((sent: string) => void) | null) => { watcher = fn; },
    thaw: () => { frozen = false; for (const s of socks) s.destroy(); },
    close: () => new Promise<void>((r) => { frozen = true; for (const s of socks) s.destroy(); if (server.listening) server.close(() => r()); else r(); }),
  };
}
