// The lab's origin: a small shop with limited capacity, so that a flood really
// hurts it. A fixed number of worker slots (like a thread/process pool), each
// request holding one for its cost (a timer: database and template time, not
// CPU, so the origin stays cheap for the machine); a bounded queue in front;
// 503 when the queue is full or a request waited too long. POSTs hold their
// slot while their body is read (thread-per-request servers do), and the
// server has a connection cap (like MaxRequestWorkers), so slowloris and slow
// POST hurt it as they hurt real servers. Latency grows with load: a request's
// service time grows with the slots busy when it starts (contention), and it
// waits in the queue when all are busy.
// A small JSON API (/api/products/N, /api/search, POST /api/cart) serves the
// lab's cookie-less API clients.
// It counts what arrived and what it served per second and per source (the
// last X-Forwarded-For address, else the TCP peer).
// Run as a child with IPC: node bench/attack-lab/origin.ts PORT
//   parent → {cmd:'reset', t0}   parent → {cmd:'report'} → OriginReport
import http from 'node:http';
import { ORIGIN_CAPACITY, bucketOf, classify, at, type OriginSecond, type OriginReport, type SourceClass } from './common.ts';

const C = ORIGIN_CAPACITY;

let t0 = Date.now();
let seconds: OriginSecond[] = [];
let perSource = new Map<string, number>();
let active = 0, open = 0;
const queue: { run: () => void; reject: () => void; at: number }[] = [];
const empty = (): OriginSecond => ({ arrivals: { legit: 0, attack: 0, other: 0 }, served: { legit: 0, attack: 0, other: 0 }, rejected: { legit: 0, attack: 0, other: 0 }, maxQueue: 0, maxConnections: 0 });
const sec = () => at(seconds, Math.max(0, bucketOf(t0)), empty);

function release() {
  active--;
  while (queue.length && active < C.slots) {
    const q = queue.shift()!;
    if (Date.now() - q.at > C.maxWaitMs) { q.reject(); continue; }
    active++;
    q.run();
  }
}
/** Runs job in a worker slot, or rejects (queue full / waited too long). */
function inSlot(job: (done: () => void) => void, reject: () => void) {
  if (active < C.slots) { active++; job(release); return; }
  if (queue.length >= C.queue) { reject(); return; }
  queue.push({ run: () => job(release), reject, at: Date.now() });
  const s = sec();
  if (queue.length > s.maxQueue) s.maxQueue = queue.length;
}

const CSS = 'body{font:16px system-ui,sans-serif;margin:0 auto;max-width:60em}'.repeat(20);
const JS = 'document.querySelectorAll("img").forEach(function(i){i.loading="lazy"});'.repeat(20);
const PNG = Buffer.alloc(4096, 7);
const ASSETS: Record<string, [string, string | Buffer]> = {
  '/static/site.css': ['text/css', CSS], '/static/app.js': ['application/javascript', JS],
  '/static/logo.png': ['image/png', PNG], '/static/hero.png': ['image/png', PNG], '/favicon.ico': ['image/x-icon', PNG.subarray(0, 1024)],
};
function pageHtml(title: string, extra = ''): string {
  const links = ['/', '/about', '/cart', '/products/3', '/products/17', '/search?q=shoes'].map((h) => `<a href="${h}">${h}</a>`).join(' ');
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title><link rel="stylesheet" href="/static/site.css"><script src="/static/app.js" defer></script><link rel="icon" href="/favicon.ico"></head>` +
    `<body><img src="/static/logo.png" alt="logo"><h1>${title}</h1><img src="/static/hero.png" alt="">${extra}<nav>${links}</nav>${'<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>'.repeat(30)}</body></html>`;
}

const server = http.createServer((req, res) => {
  const xff = req.headers['x-forwarded-for'];
  const xffStr = Array.isArray(xff) ? xff.join(',') : xff;
  const source = xffStr ? xffStr.split(',').pop()!.trim() : (req.socket.remoteAddress ?? '');
  const cls: SourceClass = classify(source);
  sec().arrivals[cls]++;
  const url = new URL(req.url ?? '/', 'http://origin');
  const p = url.pathname;
  let cost: number, type = 'text/html; charset=utf-8', body: string | Buffer, status = 200;
  const headers: Record<string, string> = { 'x-lab-origin': '1' };
  const isPost = req.method === 'POST';
  if (ASSETS[p]) { [type, body] = ASSETS[p]; cost = C.costMs.asset; headers['cache-control'] = 'public, max-age=3600'; }
  else if (p === '/search') { cost = C.costMs.search; body = pageHtml('Search', `<p>Results for ${(url.searchParams.get('q') ?? '').replace(/[<>&]/g, '')}: none</p>`); }
  else if (p === '/api/search') { cost = C.costMs.apiSearch; type = 'application/json'; body = JSON.stringify({ q: url.searchParams.get('q') ?? '', results: [] }); }
  else if (/^\/api\/products\/\d+$/.test(p)) { cost = C.costMs.api; type = 'application/json'; body = JSON.stringify({ id: Number(p.split('/')[3]), name: 'Shoe', price: 42 }); }
  else if (p === '/api/cart' && isPost) { cost = C.costMs.apiCart; type = 'application/json'; body = JSON.stringify({ ok: true }); }
  else if (p === '/login' && isPost) { cost = C.costMs.loginPost; status = 303; headers.location = '/account'; headers['set-cookie'] = `sid=${Math.random().toString(36).slice(2)}; Path=/; HttpOnly`; body = ''; }
  else if (p === '/login') { cost = C.costMs.loginGet; body = pageHtml('Log in', '<form method="post" action="/login"><input name="user"><input name="password" type="password"></form>'); }
  else if (p === '/' || p === '/about' || p === '/cart' || p === '/account' || /^\/products\/\d+$/.test(p)) { cost = C.costMs.page; body = pageHtml(p); }
  else { cost = C.costMs.notFound; status = 404; body = pageHtml('Not found'); }

  const reject = () => {
    sec().rejected[cls]++;
    if (res.headersSent || res.destroyed) return;
    res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5', 'x-lab-origin': '1', 'x-lab-overloaded': '1' });
    res.end('origin overloaded\n');
    if (isPost) req.resume();
  };
  inSlot((done) => {
    const loaded = cost * (1 + C.contention * (active - 1) / C.slots);
    const respond = (extraCost: number) => setTimeout(() => {
      done();
      if (res.destroyed) return;
      sec().served[cls]++;
      perSource.set(source, (perSource.get(source) ?? 0) + 1);
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
      res.end(body);
    }, loaded + extraCost);
    if (isPost) {
      // The client left while this POST waited in the queue: its 'close' has already been emitted, so a listener
      // added now would never run and the slot would be lost for good (eight such losses wedge the origin for the
      // rest of the run, every later target included).
      if (req.destroyed) { done(); return; }
      // The slot is held while the body arrives, as a thread-per-request server does.
      let bytes = 0;
      let finished = false;
      const end = () => { if (finished) return; finished = true; respond(Math.floor(bytes / 65536)); };
      req.on('data', (c: Buffer) => { bytes += c.length; });
      req.on('end', end);
      req.on('close', () => { if (!finished) { finished = true; done(); } });
    } else { req.resume(); respond(0); }
  }, reject);
});
server.maxConnections = C.maxConnections;
server.keepAliveTimeout = 5000;
server.on('connection', (s) => {
  open++;
  const x = sec(); if (open > x.maxConnections) x.maxConnections = open;
  s.on('close', () => { open--; });
});
server.on('clientError', (_e, s) => s.destroy());

const port = Number(process.argv[2]);
server.listen(port, '127.0.0.1', () => process.send?.({ event: 'listening' }));

process.on('message', (m: { cmd: string; t0?: number }) => {
  if (m.cmd === 'reset') { t0 = m.t0!; seconds = []; perSource = new Map(); process.send!({ event: 'reset' }); }
  if (m.cmd === 'report') {
    let legit = 0, attack = 0, attackSourcesSeen = 0, legitSourcesSeen = 0;
    for (const [s, n] of perSource) { const c = classify(s); if (c === 'legit') { legit += n; legitSourcesSeen++; } else if (c === 'attack') { attack += n; attackSourcesSeen++; } }
    const report: OriginReport = { seconds: seconds.map((s) => s ?? empty()), perSource: { legit, attack, attackSourcesSeen, legitSourcesSeen } };
    process.send!({ event: 'report', report });
  }
  if (m.cmd === 'stop') { server.closeAllConnections(); server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 1000).unref(); }
});
process.on('disconnect', () => process.exit(0));
