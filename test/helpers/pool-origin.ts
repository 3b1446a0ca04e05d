// An application with a pool of worker slots, for the end-to-end tests of the
// upstream limit and the fair share: each request holds a slot for its cost,
// which grows with the slots busy (1 + 0.5 × (busy − 1) / slots: a database
// shared by the workers); a queue in front of the slots (503 past maxWaitMs).
// So its latency grows with its load, as a real origin's does.
// Pages cost pageMs, searches (/search, /api/search) searchMs, assets 2 ms,
// other JSON calls (/api/...) apiMs. It counts, per second, the requests that
// arrived from the attack range (X-Forwarded-For 127.0.9x.y) and the others.
import http from 'node:http';
import type net from 'node:net';
import { once } from 'node:events';

export interface PoolOrigin { port: number; close(): Promise<void>; perSecond: Map<number, { attack: number; legit: number }>; rejected: number; maxQueue: number }

export async function startPoolOrigin(slots: number, pageMs: number, maxWaitMs: number, searchMs = pageMs, apiMs = 5): Promise<PoolOrigin> {
  let active = 0;
  const queue: { run: () => void; at: number; reject: () => void }[] = [];
  const o = { perSecond: new Map<number, { attack: number; legit: number }>(), rejected: 0, maxQueue: 0 } as PoolOrigin;
  const release = () => {
    active--;
    while (queue.length && active < slots) {
      const q = queue.shift()!;
      if (Date.now() - q.at > maxWaitMs) { q.reject(); continue; }
      active++;
      q.run();
    }
  };
  const server = http.createServer((req, res) => {
    const xff = String(req.headers['x-forwarded-for'] ?? '').split(',').pop()!.trim();
    const sec = Math.floor(Date.now() / 1000);
    const c = o.perSecond.get(sec) ?? { attack: 0, legit: 0 };
    o.perSecond.set(sec, c);
    if (xff.startsWith('127.0.9')) c.attack++; else c.legit++;
    const url = req.url!;
    const asset = url.startsWith('/static/');
    const api = url.startsWith('/api/');
    const cost = asset ? 2 : url.startsWith('/search') || url.startsWith('/api/search') ? searchMs : api ? apiMs : pageMs;
    const job = () => setTimeout(() => {
      release();
      const body = api ? '{"ok":true}' : asset ? 'body{margin:0}' : `<!doctype html><title>${url}</title><link rel="stylesheet" href="/static/a.css">`;
      res.writeHead(200, { 'content-type': api ? 'application/json' : asset ? 'text/css' : 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }, cost * (1 + (0.5 * (active - 1)) / slots));
    req.resume();
    if (active < slots) { active++; job(); return; }
    queue.push({ run: job, at: Date.now(), reject: () => { o.rejected++; res.writeHead(503, { 'content-length': 0 }); res.end(); } });
    if (queue.length > o.maxQueue) o.maxQueue = queue.length;
  });
  server.keepAliveTimeout = 5000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  o.port = (server.address() as net.AddressInfo).port;
  o.close = () => { server.closeAllConnections(); return new Promise((r) => server.close(() => r())); };
  return o;
}

/** The attack requests the origin saw per second, in order; their peak second; and the last two seconds before `end` (ms). */
export function attackSeconds(o: PoolOrigin, end: number): { secs: [number, { attack: number; legit: number }][]; peak: number; tail: number[]; endSec: number } {
  const secs = [...o.perSecond.entries()].sort((a, b) => a[0] - b[0]);
  const endSec = Math.floor(end / 1000);
  return { secs, peak: Math.max(...secs.map(([, c]) => c.attack)), tail: secs.filter(([s]) => s >= endSec - 2 && s < endSec).map(([, c]) => c.attack), endSec };
}
