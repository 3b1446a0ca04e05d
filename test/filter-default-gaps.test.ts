// Layer-7 attacks the filter in its DEFAULT config (filter.mode auto, default rules and limits, no maxInflight) must
// engage against by itself, on real sockets, each client on its own 127.x.y.z address: an origin that fails fast with
// 502, a flood on an image made on the fly, a rotating flood that adds Upgrade headers. Each failed on the code before
// 2026-11-29 (a reviewer's).
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';
import { startProxy, domain, sleep, type Proxy } from './helpers/servers.ts';

const HOST = 'shop.test';
const CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';
const BROWSER = { 'user-agent': CHROME, 'accept-language': 'en-US,en;q=0.9', 'accept-encoding': 'gzip' };
const PAGE_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
const APP = { 'user-agent': 'MyShopApp/4.1.2 (iPhone; iOS 17.4; Scale/3.00)', accept: 'application/json', 'accept-encoding': 'gzip' };

/**
 * An origin that fails fast when overloaded, as most real stacks do: `slots` requests at a time, each taking `costMs`;
 * one more is answered at once with `overloadStatus` (nginx in front of php-fpm whose listen backlog is full: 502;
 * an application whose database pool is exhausted: 500). Assets cost 1 ms and never fail.
 */
async function failFastOrigin(slots: number, costMs: number, overloadStatus: number) {
  let active = 0;
  const stats = { ok: 0, failed: 0 };
  const server = http.createServer((req, res) => {
    req.resume();
    const url = req.url ?? '/';
    if (url.startsWith('/static/')) { res.writeHead(200, { 'content-type': 'text/css', 'content-length': 6 }); res.end('body{}'); return; }
    if (active >= slots) {
      stats.failed++;
      const body = `<html><body>${overloadStatus} overloaded</body></html>`;
      res.writeHead(overloadStatus, { 'content-type': 'text/html', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    active++;
    setTimeout(() => {
      active--;
      stats.ok++;
      const api = url.startsWith('/api/');
      const body = api ? '{"ok":true}' : `<!doctype html><title>${url}</title><link rel="stylesheet" href="/static/a.css">`;
      res.writeHead(200, { 'content-type': api ? 'application/json' : 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }, costMs);
  });
  server.keepAliveTimeout = 5000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return { port, stats, close: () => { server.closeAllConnections(); return new Promise<void>((r) => server.close(() => r())); } };
}

interface Res { status: number; at: number; ms: number }
function get(port: number, path: string, headers: Record<string, string>, agent: http.Agent, timeoutMs = 3000): Promise<Res> {
  const at = Date.now();
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host: HOST, ...headers }, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, at, ms: Date.now() - at }));
      res.on('error', () => resolve({ status: 0, at, ms: Date.now() - at }));
    });
    req.setTimeout(timeoutMs, () => req.destroy());
    req.on('error', () => resolve({ status: 0, at, ms: Date.now() - at }));
    req.end();
  });
}

let proxy: Proxy | null = null;
let closeOrigin: (() => Promise<void>) | null = null;
afterEach(async () => { await proxy?.close(); await closeOrigin?.(); proxy = null; closeOrigin = null; });

/** People browsing from `local`: a page, then its stylesheet, cookies kept, 400–700 ms apart, until `end`. */
async function person(port: number, local: string, end: number, seed: number, out: Res[]) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: local });
  let cookie = '';
  for (let n = 0; n < 200 && Date.now() < end; n++) {
    let path = `/product/${(seed * 7 + n) % 30}`;
    for (let hop = 0; hop < 3; hop++) {
      const r = await new Promise<Res & { loc?: string; set?: string[] }>((resolve) => {
        const at = Date.now();
        const req = http.request({ host: '127.0.0.1', port, path, agent, headers: { host: HOST, ...BROWSER, accept: PAGE_ACCEPT, ...(cookie ? { cookie } : {}) } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, at, ms: Date.now() - at, loc: res.headers.location, set: res.headers['set-cookie'] }));
        });
        req.setTimeout(3000, () => req.destroy());
        req.on('error', () => resolve({ status: 0, at, ms: Date.now() - at }));
        req.end();
      });
      if (r.set?.length) cookie = r.set[0].split(';')[0];
      if (r.status === 302 && r.loc) { path = r.loc; continue; }
      out.push(r);
      break;
    }
    await get(port, '/static/a.css', { ...BROWSER, accept: 'text/css,*/*;q=0.1', ...(cookie ? { cookie } : {}) }, agent);
    await sleep(400 + ((seed * 131 + n * 71) % 300));
  }
  agent.destroy();
}

describe('default config: an origin that fails fast under load', () => {
  // an origin that signals overload with 502 (nginx in front of an application server whose backlog is
  // full: "502 Bad Gateway ... Resource temporarily unavailable") is never seen as failing. A distributed flood
  // (40 addresses, 4 requests a second each: no per-source rule could ever single one out) keeps the origin
  // answering 502 to most of the people's pages for as long as it lasts, and the filter never engages: no attack
  // mode, no ban, nothing held back.
  // SPEC §6: "Attack mode starts by itself, with no learned history and no capacity given: a saturated upstream
  // (latency against its own unloaded latency, requests waiting, failures) is a sign of attack." The product must
  // engage with no tuning; an overloaded origin's failures are the sign, whatever 5xx it uses for them.
  // (Control: the same test with the origin answering 503 instead passes: attack mode "origin saturated", 63/63
  // pages served.) The same holds for an application that answers 500 when its database pool is exhausted.
  // Until 2026-11-29: src/observe/observation.ts:54-57 (upstreamInTrouble) counts only 503/504 (and connect errors, timeouts,
  // resets) as the upstream failing (a relayed 5xx is upstreamError '5xx', flow.ts:315, and excluded), and
  // src/pipeline/flow.ts:209 tells the adaptive limit a drop only for 503/504; a fail-fast origin's latency does not
  // rise, so neither the failure sign nor the saturation sign ever shows.
  it('a distributed flood that makes the origin answer 502 starts attack mode, its upstream failing', async () => {
    const origin = await failFastOrigin(10, 100, 502);
    closeOrigin = origin.close;
    proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`])] });
    const f = proxy.app.filter as ScrubberFilter;
    const t0 = Date.now(), attackAt = t0 + 3000, end = attackAt + 15000;
    const people: Res[] = [];
    const browsing = Array.from({ length: 6 }, (_, i) => person(proxy!.port, `127.0.81.${i + 1}`, end, i + 1, people));

    await sleep(attackAt - Date.now());
    // 40 bot addresses with the app's headers on /api/search, 4 a second each (160 a second; the origin serves 100).
    const bot = async (i: number) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: `127.0.90.${i + 1}` });
      for (let n = 0; n < 200 && Date.now() < end; n++) {
        const t = Date.now();
        await get(proxy!.port, `/api/search?q=${i}-${n}`, APP, agent, 2000);
        await sleep(250 - (Date.now() - t));
      }
      agent.destroy();
    };
    await Promise.all([...Array.from({ length: 40 }, (_, i) => bot(i)), ...browsing]);

    const duringAttack = people.filter((r) => r.at >= attackAt + 5000);
    const ok = duringAttack.filter((r) => r.status === 200).length;
    const bans = f.bans().filter((b) => b.ip.startsWith('127.0.90.')).length;
    const state = f.attackState(HOST);
    const summary = `attack mode ${state?.under} (${state?.reason}); bots banned ${bans}/40; people's pages served ${ok}/${duringAttack.length}; origin ok ${origin.stats.ok}, 502 ${origin.stats.failed}`;
    console.log('[502 flood] ' + summary);
    // The filter engaged: attack mode, its upstream failing (the suspects gone after, the filter tightened). How many
    // of the people's pages are served then depends on the machine's load (70 of 73 on a quiet one): logged only.
    expect(state?.under, summary).toBe(true);
    expect(state?.upstreamFailing, summary).toBe(true);
  }, 40_000);
});

/**
 * A small application in front of a database: `slots` requests at a time (a queue in front, 503 past 5 s), pages cost
 * 10 ms, the image endpoint (`/_next/image?url=..&w=..`: Next.js's on-the-fly image optimizer, or any thumbnailer)
 * costs `imageMs` and answers image/webp, the search costs as much and answers JSON. It counts, per second, what came
 * from the flood's range (X-Forwarded-For 127.0.9x.y).
 */
async function appOrigin(slots: number, imageMs: number) {
  let active = 0;
  const queue: { run: () => void; at: number; reject: () => void }[] = [];
  const perSecond = new Map<number, number>();
  const release = () => {
    active--;
    while (queue.length && active < slots) {
      const q = queue.shift()!;
      if (Date.now() - q.at > 5000) { q.reject(); continue; }
      active++;
      q.run();
    }
  };
  const server = http.createServer((req, res) => {
    req.resume();
    const url = req.url ?? '/';
    const xff = String(req.headers['x-forwarded-for'] ?? '').split(',').pop()!.trim();
    if (xff.startsWith('127.0.9')) { const sec = Math.floor(Date.now() / 1000); perSecond.set(sec, (perSecond.get(sec) ?? 0) + 1); }
    if (url.startsWith('/static/')) { res.writeHead(200, { 'content-type': 'text/css', 'content-length': 6 }); res.end('body{}'); return; }
    const image = url.startsWith('/_next/image'), search = url.startsWith('/api/search');
    const job = () => setTimeout(() => {
      release();
      const body = image ? 'RIFF....WEBPVP8 ' : search ? '{"hits":[]}' : `<!doctype html><title>${url}</title><link rel="stylesheet" href="/static/a.css"><img src="/_next/image?url=%2Fa.jpg&w=640">`;
      res.writeHead(200, { 'content-type': image ? 'image/webp' : search ? 'application/json' : 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }, image || search ? imageMs : 10);
    if (active < slots) { active++; job(); return; }
    queue.push({ run: job, at: Date.now(), reject: () => { res.writeHead(503, { 'content-length': 0 }); res.end(); } });
  });
  server.keepAliveTimeout = 5000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return { port, perSecond, close: () => { server.closeAllConnections(); return new Promise<void>((r) => server.close(() => r())); } };
}

/** A rotating flood: each address (127.0.9x.y) sends 4 requests and is never seen again; 60 at once, each at most 10 a second. */
async function rotatingFlood(port: number, end: number, target: (i: number) => string, headers: Record<string, string>) {
  let next = 0;
  const worker = async () => {
    while (Date.now() < end && next < 2540 * 4) {
      const i = next++;
      const local = `127.0.${90 + (Math.floor(i / 4 / 254) % 10)}.${(Math.floor(i / 4) % 254) + 1}`;
      const t = Date.now();
      const agent = new http.Agent({ keepAlive: false, localAddress: local });
      await get(port, target(i), headers, agent, 2000);
      agent.destroy();
      await sleep(100 - (Date.now() - t));
    }
  };
  await Promise.all(Array.from({ length: 60 }, worker));
}

/** The flood's requests at the origin per second; its peak; its most in the last 3 s before `end`. */
function floodAtOrigin(perSecond: Map<number, number>, end: number) {
  const secs = [...perSecond.entries()].sort((a, b) => a[0] - b[0]);
  const endSec = Math.floor(end / 1000);
  return { counts: secs.map(([, c]) => c), peak: Math.max(...secs.map(([, c]) => c)), tail: Math.max(...secs.filter(([s]) => s >= endSec - 3 && s < endSec).map(([, c]) => c)) };
}

/** A rotating flood on `path(i)` with `headers` under the people's browsing (attack mode from its first seconds): it must
 *  be held to the newcomers' slice, a tenth of its peak at the origin by its last seconds. `before`: what runs first. */
async function heldToSlice(label: string, path: (i: number) => string, headers: Record<string, string>, before?: (port: number) => Promise<void>) {
  const origin = await appOrigin(6, 60);
  closeOrigin = origin.close;
  proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`])], filter: { timeScale: 0.01 } });
  const f = proxy.app.filter as ScrubberFilter;
  const t0 = Date.now(), attackAt = t0 + 3000, end = attackAt + 12000;
  const people: Res[] = [];
  const browsing = Array.from({ length: 8 }, (_, i) => person(proxy!.port, `127.0.81.${i + 1}`, end, i + 1, people));
  await before?.(proxy.port);
  await sleep(attackAt - Date.now());
  await Promise.all([rotatingFlood(proxy.port, end, path, headers), ...browsing]);
  const state = f.attackState(HOST);
  const { counts, peak, tail } = floodAtOrigin(origin.perSecond, end);
  const summary = `attack mode ${state?.under} (${state?.reason}); flood at the origin per second ${JSON.stringify(counts)}`;
  console.log(`[${label}] ${summary}`);
  expect(state?.under, summary).toBe(true);
  expect(peak, summary).toBeGreaterThan(20);
  expect(tail, summary).toBeLessThanOrEqual(0.1 * peak);
}

describe('default config: a rotating flood on a dynamic image endpoint', () => {
  // a path the origin once answered with an image Content-Type is "static" for good (to every source), and a
  // static path is "cheap": it skips the challenge and the newcomers' slice. An image optimizer / thumbnailer
  // (`/_next/image?url=..&w=..`, the well-known costly endpoint of every Next.js site) answers image/webp, so a
  // rotating flood on it (each address a few requests, never seen again) is never held back: under attack, the
  // origin keeps getting the whole flood, while the same flood on /api/search is cut to a few percent in seconds.
  // README "Newcomers share one slice of the origin": "while a domain is under attack ... every source without a
  // history counts, with all the others, as one source ... It is counted in origin time, not requests: an expensive
  // search costs what it costs the origin." and "Static assets (by path, or served as static) are not counted in it:
  // they are cheap". An image that costs the origin 60 ms to render is not cheap; being "served as static" is learned
  // from the Content-Type alone, by any source, whatever the answer cost.
  // Until 2026-11-29: src/detect/extract.ts:58 (staticPaths.set on any 200 with a static Content-Type, whatever its upstream
  // time) + src/detect/extract.ts:27-30 (staticRequest) used by src/pipeline/flow.ts:180 (d.cheap skips the slice).
  // (Control: the same flood on /api/search, JSON, same cost, is held at ~1 request a second from attack mode's
  // second on.) Adjacent to the known gap on random `/<n>.js` paths, which is about the path's suffix, not this.
  it('the flood on /_next/image is held to the newcomers\' slice once attack mode is on', async () => {
    const IMAGE = { ...BROWSER, accept: 'image/avif,image/webp,*/*' };
    // The page's image, as the people's browsers fetch it (so the path is learned as it is on a real site); then
    // rotating sources with a browser's image request, 4 each, 60 at once, each at most 10 a second.
    await heldToSlice('image flood', (i) => `/_next/image?url=%2Fp${i % 500}.jpg&w=${640 + (i % 7) * 128}&q=75`, IMAGE, async (port) => {
      const imgAgent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: '127.0.81.50' });
      await get(port, '/_next/image?url=%2Fa.jpg&w=640', IMAGE, imgAgent);
      imgAgent.destroy();
    });
  }, 40_000);
});

describe('default config: a rotating flood that adds Upgrade headers', () => {
  // the newcomers' slice, the one defence against a rotating flood that the challenge cannot stop, is skipped
  // by any request that carries `Connection: Upgrade` + `Upgrade: websocket`. An origin that does no WebSocket on
  // that path ignores the header and answers the request as usual (Node's http server does, as do nginx without
  // `proxy_set_header Upgrade`, Go's net/http, ...), and the proxy relays the declined upgrade's answer. So the same
  // rotating flood that /api/search is cut to ~1 request a second at the origin when sent plain (the control: see
  // test/origin-newcomers-e2e.test.ts) reaches the origin in full for as long as it lasts, once it adds two headers.
  // README "Newcomers share one slice of the origin": "while a domain is under attack ... every source without a
  // history counts, with all the others, as one source ... Beyond the slice a request is refused before it reaches the
  // queue". (Known gaps names only the upstream queue as skipped by upgrades, as a matter of WebSocket tunnels; here
  // the client decides, on any path, that a plain request skips the slice.)
  // Until 2026-11-29: src/pipeline/flow.ts:117 (`if (this.res === null) return this.forwardUpgrade();`) comes before the
  // newcomers' slice (flow.ts:119 inSlice); an upgrade is never asked for it.
  it('a rotating flood on /api/search with Upgrade headers is held to the newcomers\' slice once attack mode is on', async () => {
    await heldToSlice('upgrade flood', (i) => `/api/search?q=p${i % 500}`, { ...APP, ...UPGRADE });
  }, 40_000);
});
const UPGRADE: Record<string, string> = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };
