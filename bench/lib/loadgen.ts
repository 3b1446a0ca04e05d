// The throughput load generator, run as its own process (pinned to its own
// core by the parent). Raw TCP sockets, a precomputed request, closed loop:
// each connection sends its next request when the previous response is
// complete. Connections are spread over many source addresses in
// 127.0.0.0/8, so that a filtering proxy sees clean traffic from many
// moderate sources, not one address at 10k+ req/s (which a DDoS filter is
// right to ban). wrk cannot choose its source address, hence this tool.
//
// usage: node bench/lib/loadgen.ts '<json options>'   (see Options)
// Prints one JSON line (Result) on stdout. With an IPC channel it also sends
// {event:'measure-start'} / {event:'measure-end'} so the parent can sample
// the server's CPU time over exactly the measured window; the parent may send
// 'finish' to end the run early (the Result then covers what was measured so far).
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface Options {
  mode: 'http' | 'refuse';
  port: number;
  host?: string;
  /** Concurrent connections. */
  connections: number;
  /** Source addresses (connections are spread over them). */
  sources: string[];
  warmupMs: number;
  durationMs: number;
  path?: string;
  hostHeader?: string;
  /** Close and reopen (from the next source) after this many responses; 0 = never. */
  requestsPerConnection?: number;
}

export interface Result {
  mode: string;
  /** Completed in the measured window: responses (http) or refused connections (refuse). */
  count: number;
  perSec: number;
  status2xx: number;
  statusOther: number;
  errors: number;
  /** Connections that got an HTTP response in refuse mode (should be 0). */
  served: number;
  p50ms: number;
  p99ms: number;
  measuredMs: number;
}

const BUCKET_US = 10;
const hist = new Uint32Array(200_000); // 10 µs buckets up to 2 s
let histOver = 0;
function record(ms: number) {
  const i = Math.floor((ms * 1000) / BUCKET_US);
  if (i < hist.length) hist[i]++; else histOver++;
}
function percentile(p: number): number {
  let total = histOver;
  for (let i = 0; i < hist.length; i++) total += hist[i];
  if (!total) return 0;
  const want = Math.ceil(total * p);
  let acc = 0;
  for (let i = 0; i < hist.length; i++) { acc += hist[i]; if (acc >= want) return ((i + 0.5) * BUCKET_US) / 1000; }
  return 2000;
}

const opts = JSON.parse(process.argv[2]) as Options;
const host = opts.host ?? '127.0.0.1';
const HEAD = `GET ${opts.path ?? '/'} HTTP/1.1\r\nHost: ${opts.hostHeader ?? 'bench.test'}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.9\r\n`;
const REQ = Buffer.from(HEAD + '\r\n');
// Like browsers, each source keeps the cookies it is given (a filter's challenge cookie) and sends them back.
const requestOf = new Map<string, Buffer>();
const CRLF2 = Buffer.from('\r\n\r\n');
const CHUNK_END = Buffer.from('0\r\n\r\n');

let measuring = false, stopped = false;
let count = 0, s2xx = 0, sOther = 0, errors = 0, served = 0;
const sockets = new Set<net.Socket>();

let nextSource = 0;
const perConn = opts.requestsPerConnection ?? 0;
function httpConn() {
  if (stopped) return;
  const localAddress = opts.sources[nextSource++ % opts.sources.length];
  let served2 = 0;
  const sock = net.connect({ port: opts.port, host, localAddress, noDelay: true });
  sockets.add(sock);
  let buf: Buffer | null = null;
  let sentAt = 0;
  let need = -1; // total bytes of the current response once known; -2 = chunked
  let status = 0;
  const send = () => { if (stopped) return; sentAt = performance.now(); sock.write(requestOf.get(localAddress) ?? REQ); };
  sock.on('connect', send);
  sock.on('data', (chunk: Buffer) => {
    buf = buf ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (need === -1) {
        const end = buf.indexOf(CRLF2);
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end).toLowerCase();
        status = Number(head.slice(9, 12));
        if (head.includes('\r\nset-cookie:')) {
          const raw = buf.toString('latin1', 0, end);
          const cookies = [...raw.matchAll(/\r\nset-cookie:\s*([^;\r]+)/gi)].map((m) => m[1]);
          requestOf.set(localAddress, Buffer.from(`${HEAD}Cookie: ${cookies.join('; ')}\r\n\r\n`));
        }
        const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
        if (cl) need = end + 4 + Number(cl[1]);
        else if (head.includes('transfer-encoding: chunked')) need = -2;
        else need = end + 4;
      }
      let done = -1;
      if (need === -2) { const i = buf.indexOf(CHUNK_END); if (i >= 0) done = i + CHUNK_END.length; } else if (buf.length >= need) done = need;
      if (done < 0) return;
      if (measuring) {
        count++;
        if (status >= 200 && status < 300) s2xx++; else sOther++;
        record(performance.now() - sentAt);
      }
      buf = buf.length > done ? buf.subarray(done) : null;
      need = -1;
      if (perConn && ++served2 >= perConn) { sock.destroy(); return; }
      send();
      if (!buf) return;
    }
  });
  sock.on('error', () => { if (measuring) errors++; });
  sock.on('close', () => { sockets.delete(sock); if (!stopped) setImmediate(httpConn); });
}

function refuseConn(localAddress: string) {
  if (stopped) return;
  const sock = net.connect({ port: opts.port, host, localAddress });
  sockets.add(sock);
  let gotData = false;
  sock.on('connect', () => sock.write(REQ));
  sock.on('data', () => { if (!gotData) { gotData = true; if (measuring) served++; } sock.destroy(); });
  sock.on('error', () => {});
  sock.on('close', () => {
    sockets.delete(sock);
    if (measuring && !gotData) count++;
    if (!stopped) setImmediate(() => refuseConn(localAddress));
  });
}

for (let i = 0; i < opts.connections; i++) { if (opts.mode === 'refuse') refuseConn(opts.sources[i % opts.sources.length]); else httpConn(); }

let t0 = 0;
/** Stops and prints the Result (at the end of durationMs, or earlier when the parent sends 'finish'). */
function finish(): void {
  if (stopped) return;
  measuring = false;
  const measuredMs = performance.now() - t0;
  process.send?.({ event: 'measure-end' });
  stopped = true;
  for (const s of sockets) s.destroy();
  const r: Result = {
    mode: opts.mode, count, perSec: (count * 1000) / measuredMs, status2xx: s2xx, statusOther: sOther, errors, served,
    p50ms: percentile(0.5), p99ms: percentile(0.99), measuredMs,
  };
  process.stdout.write(JSON.stringify(r) + '\n', () => {
    if (process.connected) process.disconnect();
    process.exit(0);
  });
}
process.on('message', (m) => { if (m === 'finish' && t0 > 0) finish(); });
setTimeout(() => {
  measuring = true;
  t0 = performance.now();
  process.send?.({ event: 'measure-start' });
  setTimeout(finish, opts.durationMs);
}, opts.warmupMs);
