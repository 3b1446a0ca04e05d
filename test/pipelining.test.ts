// HTTP/1.1 pipelining (src/pipeline/pipeline.ts, handle): a connection's
// requests go upstream one at a time, in order, as nginx and HAProxy take
// them; one whose connection is gone before its turn never goes. A real
// Scrubber, a real upstream that answers some paths slowly, raw client bytes.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { startOrigin, startProxy, domain, sleep, until, type Origin, type Proxy } from './helpers/servers.ts';
import { PIPELINE_DEPTH } from '../src/pipeline/pipeline.ts';

let origin: Origin;
let proxy: Proxy;
let atOrigin = 0, mostAtOnce = 0;

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    atOrigin++;
    mostAtOnce = Math.max(mostAtOnce, atOrigin);
    const delay = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? 0);
    req.resume();
    setTimeout(() => {
      atOrigin--;
      if (res.destroyed) return;
      const body = `answer to ${req.url}\n`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    }, delay);
  });
  origin.server.on('upgrade', (_req, sock: net.Socket) => {
    sock.on('error', () => {});
    sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    sock.on('data', (d) => sock.write(d));
    sock.on('end', () => sock.end());
  });
  proxy = await startProxy({ filter: { mode: 'off' }, domains: [domain('site.test', [origin.address])] });
});
afterAll(async () => { await proxy.close(); await origin.close(); });
beforeEach(() => { origin.seen.length = 0; mostAtOnce = 0; });

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: site.test\r\n${extra}\r\n`;

/** Writes `wire` at once on one connection; the answers' bodies in the order they came, after `ms` or the close. */
async function pipeline(wire: string, ms: number, closeAfterMs?: number, reset = false): Promise<string[]> {
  const text = await exchange([[0, wire]], ms, closeAfterMs, reset);
  return [...text.matchAll(/answer to (\S+)/g)].map((m) => m[1]);
}

/** Writes each step's bytes after its pause, on one connection; everything that came back, after `ms` or the close. */
function exchange(steps: [number, string][], ms: number, closeAfterMs?: number, reset = false): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port: proxy.port, host: '127.0.0.1' });
    let text = '';
    s.on('connect', async () => {
      if (closeAfterMs !== undefined) setTimeout(() => (reset ? s.resetAndDestroy() : s.destroy()), closeAfterMs);
      for (const [wait, bytes] of steps) { await sleep(wait); if (!s.destroyed) s.write(bytes); }
    });
    s.on('data', (c) => { text += c; });
    s.on('error', () => {});
    const done = () => { clearTimeout(t); s.destroy(); resolve(text); };
    const t = setTimeout(done, ms);
    s.on('close', done);
  });
}

const upgrade = (path: string) => get(path, 'Upgrade: websocket\r\nConnection: Upgrade\r\n');

describe('pipelined requests', () => {
  it('go upstream one at a time, in order, and are answered in order', async () => {
    const paths = ['/1?ms=80', '/2?ms=10', '/3?ms=40', '/4', '/5?ms=20'];
    const answers = await pipeline(paths.map((p) => get(p)).join(''), 1000);
    expect(answers).toEqual(paths);
    expect(origin.seen.map((s) => s.url)).toEqual(paths);
    expect(mostAtOnce).toBe(1);
  });

  it('behind one whose client reset its connection, never go upstream, and leave nothing in flight', async () => {
    const answers = await pipeline(get('/slow?ms=300') + get('/after-1') + get('/after-2'), 2000, 100, true);
    expect(answers).toEqual([]);
    await sleep(400);
    expect(origin.seen.map((s) => s.url)).toEqual(['/slow?ms=300']);
    expect(await until(() => proxy.app.pipeline.inFlight === 0, 2000)).toBe(true);
  });

  // A FIN alone may be a half-close (the client still reads: test/edge-client-half-close.test.ts), so what it asked
  // before it is owed; a client that closed altogether resets the first answer written to it, and what is behind
  // that answer is dropped then: the one that started as the answer went out may still reach the origin, no more.
  it('behind one whose client closed its connection, at most the next one goes upstream, and nothing stays in flight', async () => {
    const answers = await pipeline(get('/slow?ms=300') + get('/after-1') + get('/after-2') + get('/after-3'), 2000, 100);
    expect(answers).toEqual([]);
    await sleep(600);
    expect(origin.seen.map((s) => s.url).slice(0, 1)).toEqual(['/slow?ms=300']);
    expect(origin.seen.map((s) => s.url).filter((u) => u === '/after-2' || u === '/after-3')).toEqual([]);
    expect(await until(() => proxy.app.pipeline.inFlight === 0, 2000)).toBe(true);
  });

  it(`may be ${PIPELINE_DEPTH} deep behind the one answered; one more closes the connection, and none of them goes upstream`, async () => {
    const deep = ['/slow?ms=200', ...Array.from({ length: PIPELINE_DEPTH }, (_, i) => `/q${i}`)];
    expect(await pipeline(deep.map((p) => get(p)).join(''), 2000)).toEqual(deep);
    origin.seen.length = 0;
    const t0 = Date.now();
    const tooDeep = await pipeline(['/slow?ms=200', ...Array.from({ length: PIPELINE_DEPTH + 1 }, (_, i) => `/q${i}`)].map((p) => get(p)).join(''), 2000);
    expect(tooDeep).toEqual([]);
    expect(Date.now() - t0).toBeLessThan(200); // closed at once, not after the slow answer
    await sleep(300);
    expect(origin.seen.map((s) => s.url).filter((u) => u !== '/slow?ms=200')).toEqual([]);
  });

  it('are read again once the queue has moved: the connection goes on serving', async () => {
    const answers = await new Promise<string[]>((resolve) => {
      const s = net.connect({ port: proxy.port, host: '127.0.0.1' });
      let text = '';
      s.on('connect', () => {
        s.write(get('/a?ms=100') + get('/b') + get('/c'));
        // More, written while /b and /c wait (the connection is not being read then).
        setTimeout(() => s.write(get('/d') + get('/e?ms=20')), 30);
      });
      s.on('data', (c) => { text += c; if ((text.match(/answer to/g) ?? []).length === 5) { s.destroy(); resolve([...text.matchAll(/answer to (\S+)/g)].map((m) => m[1])); } });
      s.on('error', () => {});
      setTimeout(() => { s.destroy(); resolve([...text.matchAll(/answer to (\S+)/g)].map((m) => m[1])); }, 2000);
    });
    expect(answers).toEqual(['/a?ms=100', '/b', '/c', '/d', '/e?ms=20']);
    expect(mostAtOnce).toBe(1);
  });

  // (Node's own parser takes nothing after a request that says Connection: close: this held before, and holds.)
  it('an Upgrade behind an answer still on its way waits for it: the 101 and the tunnel come after it, not into it', async () => {
    const text = await exchange([[0, get('/slow?ms=300')], [50, upgrade('/ws')], [400, 'ping-through-tunnel']], 1500);
    const answer = text.indexOf('answer to /slow'), switched = text.indexOf('101 Switching'), echoed = text.indexOf('ping-through-tunnel');
    expect(answer).toBeGreaterThan(-1);
    expect(switched).toBeGreaterThan(answer);
    expect(echoed).toBeGreaterThan(switched);
  });

  it('an Upgrade behind pipelined requests waits for every one of them, in order', async () => {
    const text = await exchange([[0, get('/slow?ms=200') + get('/b') + upgrade('/ws')], [500, 'ping-through-tunnel']], 1500);
    const order = ['answer to /slow', 'answer to /b', '101 Switching', 'ping-through-tunnel'].map((t) => text.indexOf(t));
    expect(order.every((i) => i > -1)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
  });

  it('a CONNECT behind an answer still on its way: the answer goes out whole, then the 405', async () => {
    const text = await exchange([[0, get('/slow?ms=200')], [50, 'CONNECT site.test:443 HTTP/1.1\r\nHost: site.test:443\r\n\r\n']], 1000);
    const answer = text.indexOf('answer to /slow'), refused = text.indexOf('405');
    expect(answer).toBeGreaterThan(-1);
    expect(refused).toBeGreaterThan(answer);
  });

  it('behind one that closes the connection (Connection: close), never go upstream', async () => {
    const answers = await pipeline(get('/last?ms=50', 'Connection: close\r\n') + get('/never'), 1500);
    expect(answers).toEqual(['/last?ms=50']);
    await sleep(100);
    expect(origin.seen.map((s) => s.url)).toEqual(['/last?ms=50']);
  });
});

describe('a pipelining flood', () => {
  let guarded: Proxy;
  beforeAll(async () => { guarded = await startProxy({ filter: { mode: 'auto' }, domains: [domain('site.test', [origin.address])] }); });
  afterAll(async () => { await guarded.close(); });

  it('is counted against its source at each connection closed for its depth, and banned as malformed', async () => {
    const wire = ['/slow?ms=100', ...Array.from({ length: PIPELINE_DEPTH + 1 }, (_, i) => `/q${i}`)].map((p) => get(p)).join('');
    for (let i = 0; i < 30 && !guarded.app.filter.bans().some((b) => b.ip === '127.0.91.1'); i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect({ port: guarded.port, host: '127.0.0.1', localAddress: '127.0.91.1' });
        s.on('connect', () => s.write(wire));
        s.on('data', () => {});
        s.on('error', () => {});
        s.on('close', () => resolve());
        setTimeout(() => { s.destroy(); resolve(); }, 1000);
      });
    }
    expect(guarded.app.filter.bans().find((b) => b.ip === '127.0.91.1')?.rule).toBe('malformed');
  });
});
