// `node bench/workers.ts [--duration S --warmup S --rounds N --connections N --workers 1,2 --ac-duration S --smoke --only ban --root DIR --fresh]`
// One worker process against several, side by side in one run (issue 11,
// "Every core"): the same Scrubber (filter.mode always) in front of the same
// origin, started with `workers: 1` (one process, as before) and `workers: 2`
// (a primary that accepts and hands each source to a worker process).
//   1. bench/lib/loadgen.ts: keep-alive connections over 1024 source addresses (each source to its own worker);
//   2. autocannon from 127.0.0.1, whitelisted first (a whitelisted source goes round robin over the workers);
//   3. flood ban time: one address floods over 32 connections; time until /api/blacklist lists it;
//   4. a new connection per request (the primary's handover cost), and connections refused at accept;
//   5. the references: nginx (a master and N workers) and the undici floor (N processes on one port) with the same
//      process counts under loads 1 and 2, so that what a second process costs on this machine itself is read apart
//      from what Scrubber's workers cost.
// req/s and CPU per request (user+system of the primary and every worker, /proc) for each; nothing is pinned:
// on a 2-core machine the load generator and the origin share the cores with the workers, so the CPU per request
// is the fairer ratio there (both are printed). Results: terminal and bench/results/workers.md.
// `--only ban`: the flood ban time alone (part 3), each round on a proxy warmed by one unmeasured loadgen run, as the
// full bench's flood comes after the loadgen and autocannon runs; terminal only. `--root DIR`: the Scrubber of another
// checkout (a baseline commit) under the same bench.
import path from 'node:path';
import { parseArgs } from 'node:util';
// @ts-ignore autocannon ships no type declarations; the few fields used are typed below.
import autocannonUntyped from 'autocannon';
import { startNode, startScrubber, stopAll, freePort, waitForPort, cpuSeconds, ROOT, sleep, type Child } from './lib/proc.ts';
import { table, textTable, writeResult, fmt, machineLine } from './lib/report.ts';
import { startNginx } from './lib/thirdparty.ts';
import fs from 'node:fs';
import type { Options as LoadOptions, Result as LoadResult } from './lib/loadgen.ts';

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false }, duration: { type: 'string' }, warmup: { type: 'string' }, rounds: { type: 'string' },
    connections: { type: 'string' }, workers: { type: 'string' }, 'ac-duration': { type: 'string' }, only: { type: 'string' }, root: { type: 'string' }, fresh: { type: 'boolean', default: false },
  },
});
const smoke = args.smoke!;
const DURATION_MS = Number(args.duration ?? (smoke ? 2 : 6)) * 1000;
const WARMUP_MS = Number(args.warmup ?? 1) * 1000;
const ROUNDS = Number(args.rounds ?? (smoke ? 1 : 2));
const CONNECTIONS = Number(args.connections ?? 64);
const AC_DURATION = Number(args['ac-duration'] ?? (smoke ? 2 : 5));
const COUNTS = (args.workers ?? '1,2').split(',').map(Number);
const HOST = 'bench.test';
const SOURCES = Array.from({ length: 1024 }, (_, i) => `127.3.${Math.floor(i / 250)}.${(i % 250) + 1}`);

interface AcResult { requests: { average: number; total: number }; latency: { p50: number; p99: number }; '2xx': number; non2xx: number; errors: number }
const autocannon = autocannonUntyped as (o: Record<string, unknown>) => Promise<AcResult>;

interface Proxy { workers: number; port: number; adminUrl: string; pids: number[]; stop(): Promise<void> }
interface Row { rps: number; cpuUsPerReq: number | null; p50: number; p99: number; bad: number; primaryUsPerReq?: number | null }

const cpuOf = (pids: number[]) => { let s = 0; for (const p of pids) { const c = cpuSeconds(p); if (c == null) return null; s += c; } return s; };

async function startProxy(workers: number, originPort: number): Promise<Proxy> {
  const s = await startScrubber({ name: `scrubber-w${workers}`, root: args.root ? path.resolve(args.root) : undefined, upstream: `127.0.0.1:${originPort}`, domain: HOST, mode: 'always', extra: { workers } });
  let pids = [s.child.pid];
  if (workers > 1) {
    const list = (await (await fetch(`${s.adminUrl}/api/workers`)).json()) as { workers: { pid: number }[] };
    pids = [s.child.pid, ...list.workers.map((w) => w.pid)];
  }
  return { workers, port: s.port, adminUrl: s.adminUrl, pids, stop: () => s.child.stop() };
}

function runLoad(o: LoadOptions, pids: number[], onStart?: () => void): { done: Promise<{ r: LoadResult; cpu: number | null; primaryCpu: number | null }>; stop: () => Promise<void>; finish: () => void } {
  const child = startNode(path.join(ROOT, 'bench/lib/loadgen.ts'), [JSON.stringify(o)], { name: 'loadgen', stdout: 'pipe', ipc: true });
  let out = '';
  child.proc.stdout!.on('data', (c) => { out += c; });
  let c0: number | null = null, c1: number | null = null, p0: number | null = null, p1: number | null = null;
  child.proc.on('message', (m: { event: string }) => {
    if (m.event === 'measure-start') { c0 = cpuOf(pids); p0 = cpuSeconds(pids[0]); onStart?.(); }
    if (m.event === 'measure-end') { c1 = cpuOf(pids); p1 = cpuSeconds(pids[0]); }
  });
  const done = child.exited.then(() => {
    const line = out.trim().split('\n').pop();
    const r = line ? (JSON.parse(line) as LoadResult) : ({ perSec: 0, count: 0, p50ms: 0, p99ms: 0, errors: 0, statusOther: 0 } as LoadResult);
    return { r, cpu: c0 != null && c1 != null ? c1 - c0 : null, primaryCpu: p0 != null && p1 != null ? p1 - p0 : null };
  });
  return { done, stop: () => child.stop(), finish: () => { if (child.proc.connected) child.proc.send('finish'); } };
}

async function loadgen(p: Proxy): Promise<Row> {
  const { r, cpu, primaryCpu } = await runLoad({ mode: 'http', port: p.port, connections: CONNECTIONS, sources: SOURCES, warmupMs: WARMUP_MS, durationMs: DURATION_MS, hostHeader: HOST, requestsPerConnection: 50 }, p.pids).done;
  const per = (c: number | null) => (c != null && r.count ? (c * 1e6) / r.count : null);
  // With workers, the primary's own share (accepting, handing over, adding up reports) is shown apart.
  return { rps: r.perSec, cpuUsPerReq: per(cpu), primaryUsPerReq: p.workers > 1 ? per(primaryCpu) : null, p50: r.p50ms, p99: r.p99ms, bad: r.errors };
}

/** A new connection per request (each from the next of 1024 sources): what handing a connection over costs. */
async function churn(p: Proxy): Promise<Row> {
  const { r, cpu } = await runLoad({ mode: 'http', port: p.port, connections: 32, sources: SOURCES, warmupMs: WARMUP_MS, durationMs: DURATION_MS, hostHeader: HOST, requestsPerConnection: 1 }, p.pids).done;
  return { rps: r.perSec, cpuUsPerReq: cpu != null && r.count ? (cpu * 1e6) / r.count : null, p50: r.p50ms, p99: r.p99ms, bad: r.errors };
}

/** Connections from a banned source, refused at accept (by the primary, with workers). */
async function refusals(p: Proxy, ip: string): Promise<Row> {
  await fetch(`${p.adminUrl}/api/blacklist/${ip}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"ttlSeconds":600,"reason":"bench"}' });
  const { r, cpu } = await runLoad({ mode: 'refuse', port: p.port, connections: 32, sources: [ip], warmupMs: WARMUP_MS, durationMs: DURATION_MS, hostHeader: HOST }, p.pids).done;
  return { rps: r.perSec, cpuUsPerReq: cpu != null && r.count ? (cpu * 1e6) / r.count : null, p50: 0, p99: 0, bad: r.served };
}

async function withAutocannon(p: Proxy): Promise<Row> {
  if (p.adminUrl) {
    const put = await fetch(`${p.adminUrl}/api/whitelist/127.0.0.1`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"note":"bench/workers.ts"}' });
    if (put.status !== 200) throw new Error(`whitelist: ${put.status}`);
  }
  await autocannon({ url: `http://127.0.0.1:${p.port}/`, connections: 10, duration: 1, headers: { host: HOST } });
  const c0 = cpuOf(p.pids);
  const r = await autocannon({ url: `http://127.0.0.1:${p.port}/`, connections: 10, duration: AC_DURATION, headers: { host: HOST } });
  const c1 = cpuOf(p.pids);
  if (p.adminUrl) await fetch(`${p.adminUrl}/api/whitelist/127.0.0.1`, { method: 'DELETE' });
  return { rps: r.requests.average, cpuUsPerReq: c0 != null && c1 != null && r.requests.total ? ((c1 - c0) * 1e6) / r.requests.total : null, p50: r.latency.p50, p99: r.latency.p99, bad: r.non2xx + r.errors };
}

/** The references: nginx and the undici floor (bench/servers/undici-forwarder.ts, N processes sharing the port with
 *  SO_REUSEPORT) with the same process counts, under the same two loads: what another process costs on this machine by
 *  itself (the cores are shared with the load generator and the origin), whatever the proxy. A skip reason when it
 *  is not installed or did not start. */
const REFERENCES = ['nginx', 'undici-floor'] as const;
type Reference = (typeof REFERENCES)[number];

async function startReference(ref: Reference, workers: number, originPort: number): Promise<Proxy | string> {
  if (ref === 'undici-floor') {
    const port = await freePort();
    const kids: Child[] = [];
    for (let i = 0; i < workers; i++) {
      const c = startNode(path.join(ROOT, 'bench/servers/undici-forwarder.ts'), [String(port), String(originPort), 'reuse'], { name: `undici-floor-${i}` });
      await waitForPort(port, c); // the first is listening; the next ones join the port once they are up
      kids.push(c);
    }
    await sleep(300);
    return { workers, port, adminUrl: '', pids: kids.map((c) => c.pid), stop: async () => { await Promise.all(kids.map((c) => c.stop())); } };
  }
  const r = await startNginx(originPort, 'plain', null, workers);
  if ('skipped' in r) return r.skipped;
  let pids = [r.child.pid];
  // With a master, the workers are its children; their CPU is counted with the master's, as Scrubber's primary's.
  const want = workers > 1 ? workers + 1 : 1, deadline = Date.now() + 5000;
  while (pids.length < want && Date.now() < deadline) {
    const kids = fs.readFileSync(`/proc/${r.child.pid}/task/${r.child.pid}/children`, 'utf8').trim();
    pids = [r.child.pid, ...(kids ? kids.split(' ').map(Number) : [])];
    if (pids.length < want) await sleep(20);
  }
  if (pids.length < want) { await r.child.stop(); return `nginx started ${pids.length - 1} of ${workers} workers`; }
  return { workers, port: r.port, adminUrl: '', pids, stop: () => r.child.stop() };
}

interface FloodBan { decided: number | null; listed: number | null; through: number | null }

/** The median of what was measured (rounds that measured nothing left out); null when none did. */
function medN(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x != null).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : null;
}

/** From the flood's start: when the ban was decided (the entry's `since`, stamped by the deciding worker) and when
 *  the admin API listed it (with workers: one IPC hop later, plus the poll's resolution); null when not banned.
 *  `through`: the flood's requests the origin answered (2xx; the first of each connection is the challenge), counted
 *  until half a second after the listing — what the flood cost the origin before the ban took hold. */
async function floodBan(p: Proxy, ip: string): Promise<FloodBan> {
  let t0 = 0;
  const load = runLoad({ mode: 'http', port: p.port, connections: 32, sources: [ip], warmupMs: 0, durationMs: 10_000, hostHeader: HOST }, p.pids, () => { t0 = Date.now(); });
  let out: { decided: number | null; listed: number | null } = { decided: null, listed: null };
  const deadline = Date.now() + 12_000;
  while (out.listed === null && Date.now() < deadline) {
    const r = (await (await fetch(`${p.adminUrl}/api/blacklist/${ip}`)).json()) as { listed: boolean; since?: string };
    if (r.listed && t0) out = { decided: Date.parse(r.since!) - t0, listed: Date.now() - t0 };
    else await sleep(5);
  }
  if (out.listed === null) { await load.stop(); return { ...out, through: null }; }
  await sleep(500);
  load.finish();
  const { r } = await load.done;
  return { ...out, through: r.status2xx };
}

/** Flood ban times alone: a warm-up per proxy (not measured), then one flood per proxy per round, order alternating. */
async function banOnly(proxies: Proxy[]) {
  for (const p of proxies) await loadgen(p);
  const ban = new Map<number, FloodBan[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const p of round % 2 ? proxies : [...proxies].reverse()) {
      const t = await floodBan(p, `127.8.${round % 250}.${p.workers}`);
      ban.set(p.workers, [...(ban.get(p.workers) ?? []), t]);
      console.log(`  round ${round} workers ${p.workers}: flood ban decided after ${t.decided == null ? 'not banned' : `${fmt(t.decided)} ms, listed after ${fmt(t.listed)} ms, ${t.through} flood requests answered by the origin`}`);
    }
  }
  const head = ['workers', 'flood ban decided ms (median)', 'listed ms (median)', 'flood requests at the origin (median)', 'decided, each round', 'at the origin, each round', 'not banned'];
  console.log(`\nflood ban, median of ${ROUNDS} round(s):\n${textTable(head, COUNTS.map((n) => {
    const xs = ban.get(n)!;
    return [n, fmt(medN(xs.map((x) => x.decided))), fmt(medN(xs.map((x) => x.listed))), fmt(medN(xs.map((x) => x.through))), xs.map((x) => x.decided ?? '–').join(' '), xs.map((x) => x.through ?? '–').join(' '), xs.filter((x) => x.decided == null).length];
  }))}`);
}

async function main() {
  console.log(`workers bench${smoke ? ' (smoke)' : ''}: workers ${COUNTS.join(' vs ')}; loadgen ${CONNECTIONS} connections over ${SOURCES.length} sources, ${ROUNDS} round(s) × ${WARMUP_MS / 1000}+${DURATION_MS / 1000} s; autocannon 10 connections × ${AC_DURATION} s`);
  const originPort = await freePort();
  const origin = startNode(path.join(ROOT, 'bench/servers/fast-origin.ts'), [String(originPort)], { name: 'origin' });
  await waitForPort(originPort, origin);
  const proxies: Proxy[] = [];
  for (const n of COUNTS) proxies.push(await startProxy(n, originPort));
  if (args.only === 'ban') {
    await banOnly(proxies);
    for (const p of proxies) await p.stop();
    await stopAll();
    return;
  }
  if (args.only) throw new Error(`--only: only "ban" is known, not ${args.only}`);
  const lg = new Map<number, Row[]>(), ac = new Map<number, Row[]>(), ban = new Map<number, FloodBan[]>(), ch = new Map<number, Row[]>(), rf = new Map<number, Row[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    // --fresh: new processes every round (one process can run 10-25% slower than another of the same build for its
    // whole life; see the throughput bench), so the median compares worker counts rather than two draws.
    if (args.fresh && round > 1) for (let i = 0; i < proxies.length; i++) { await proxies[i].stop(); proxies[i] = await startProxy(proxies[i].workers, originPort); }
    const order = round % 2 ? proxies : [...proxies].reverse();
    for (const p of order) {
      const a = await loadgen(p);
      lg.set(p.workers, [...(lg.get(p.workers) ?? []), a]);
      const b = await withAutocannon(p);
      ac.set(p.workers, [...(ac.get(p.workers) ?? []), b]);
      const t = await floodBan(p, `127.8.${round}.${p.workers}`);
      ban.set(p.workers, [...(ban.get(p.workers) ?? []), t]);
      const c = await churn(p);
      ch.set(p.workers, [...(ch.get(p.workers) ?? []), c]);
      const f = await refusals(p, `127.9.${round}.${p.workers}`);
      rf.set(p.workers, [...(rf.get(p.workers) ?? []), f]);
      console.log(`  round ${round} workers ${p.workers}: loadgen ${fmt(a.rps)} req/s ${fmt(a.cpuUsPerReq, 1)} µs/req${a.primaryUsPerReq != null ? ` (primary ${fmt(a.primaryUsPerReq, 1)})` : ''} | autocannon ${fmt(b.rps)} req/s ${fmt(b.cpuUsPerReq, 1)} µs/req | flood ban decided after ${t.decided == null ? 'not banned' : `${fmt(t.decided)} ms, listed after ${fmt(t.listed)} ms, ${t.through} at the origin`} | ` +
        `new conn per request ${fmt(c.rps)}/s ${fmt(c.cpuUsPerReq, 1)} µs | refused at accept ${fmt(f.rps)}/s ${fmt(f.cpuUsPerReq, 1)} µs${f.bad ? ` (${f.bad} SERVED)` : ''}`);
    }
  }
  for (const p of proxies) await p.stop();
  // The references: a new nginx (or new floor processes) for every measurement, the same loads, order alternating.
  const refLg = new Map<string, Row[]>(), refAc = new Map<string, Row[]>(), refSkipped = new Map<Reference, string>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const ref of REFERENCES) {
      if (refSkipped.has(ref)) continue;
      for (const n of round % 2 ? COUNTS : [...COUNTS].reverse()) {
        const p = await startReference(ref, n, originPort);
        if (typeof p === 'string') { refSkipped.set(ref, p); break; }
        const a = await loadgen(p), b = await withAutocannon(p);
        await p.stop();
        refLg.set(`${ref} ${n}`, [...(refLg.get(`${ref} ${n}`) ?? []), a]);
        refAc.set(`${ref} ${n}`, [...(refAc.get(`${ref} ${n}`) ?? []), b]);
        console.log(`  round ${round} ${ref}, ${n} process(es): loadgen ${fmt(a.rps)} req/s ${fmt(a.cpuUsPerReq, 1)} µs/req | autocannon ${fmt(b.rps)} req/s ${fmt(b.cpuUsPerReq, 1)} µs/req`);
      }
    }
  }
  await stopAll();

  const med = (rows: Row[]) => [...rows].sort((x, y) => x.rps - y.rps)[Math.floor((rows.length - 1) / 2)];
  const base = COUNTS[0];
  const head = ['workers', 'loadgen req/s', 'µs CPU/req', 'of which primary', 'p99 ms', 'autocannon req/s', 'µs CPU/req', 'p99 ms', 'flood ban decided ms', 'listed ms', 'flood requests at the origin', `req/s vs ${base}`, `CPU/req vs ${base}`, `autocannon vs ${base}`];
  const rows = COUNTS.map((n) => {
    const a = med(lg.get(n)!), b = med(ac.get(n)!), a0 = med(lg.get(base)!), b0 = med(ac.get(base)!);
    return [n, fmt(a.rps), fmt(a.cpuUsPerReq, 1), fmt(a.primaryUsPerReq, 1), fmt(a.p99, 2), fmt(b.rps), fmt(b.cpuUsPerReq, 1), fmt(b.p99, 2), fmt(medN(ban.get(n)!.map((x) => x.decided))), fmt(medN(ban.get(n)!.map((x) => x.listed))), fmt(medN(ban.get(n)!.map((x) => x.through))),
      `${fmt(a.rps / a0.rps, 2)}×`, a.cpuUsPerReq && a0.cpuUsPerReq ? `${fmt(a.cpuUsPerReq / a0.cpuUsPerReq, 2)}×` : '–', `${fmt(b.rps / b0.rps, 2)}×`];
  });
  const head2 = ['workers', 'new conn per request /s', 'µs CPU each', 'p99 ms', 'refused at accept /s', 'µs CPU each', `conn/s vs ${base}`];
  const rows2 = COUNTS.map((n) => {
    const c = med(ch.get(n)!), f = med(rf.get(n)!), c0 = med(ch.get(base)!);
    return [n, fmt(c.rps), fmt(c.cpuUsPerReq, 1), fmt(c.p99, 2), fmt(f.rps), fmt(f.cpuUsPerReq, 1), `${fmt(c.rps / c0.rps, 2)}×`];
  });
  const head3 = ['reference', 'processes', 'loadgen req/s', 'µs CPU/req', 'autocannon req/s', 'µs CPU/req', `req/s vs ${base}`, `CPU/req vs ${base}`, `autocannon req/s vs ${base}`, `autocannon CPU/req vs ${base}`];
  const ratio = (a: number | null, b: number | null) => (a && b ? `${fmt(a / b, 2)}×` : '–');
  const rows3 = REFERENCES.filter((ref) => !refSkipped.has(ref)).flatMap((ref) => COUNTS.map((n) => {
    const a = med(refLg.get(`${ref} ${n}`)!), b = med(refAc.get(`${ref} ${n}`)!), a0 = med(refLg.get(`${ref} ${base}`)!), b0 = med(refAc.get(`${ref} ${base}`)!);
    return [ref, n, fmt(a.rps), fmt(a.cpuUsPerReq, 1), fmt(b.rps), fmt(b.cpuUsPerReq, 1), ratio(a.rps, a0.rps), ratio(a.cpuUsPerReq, a0.cpuUsPerReq), ratio(b.rps, b0.rps), ratio(b.cpuUsPerReq, b0.cpuUsPerReq)];
  }));
  const skippedRefs = [...refSkipped].map(([ref, why]) => `${ref} reference: skipped — ${why}`).join('\n');
  const ref = [rows3.length ? textTable(head3, rows3) : '', skippedRefs].filter(Boolean).join('\n');
  console.log(`\nmedian of ${ROUNDS} round(s):\n${textTable(head, rows)}\n\n${textTable(head2, rows2)}\n\n${ref}`);
  const md = `# Workers bench\n\n${machineLine()}${smoke ? ' — **smoke run**' : ''}\n\nCommand: \`node bench/workers.ts${process.argv.slice(2).length ? ' ' + process.argv.slice(2).join(' ') : ''}\`. ` +
    `Scrubber with filter.mode always, started ${args.fresh ? 'anew every round (--fresh)' : 'once per worker count'}, same origin (bench/servers/fast-origin.ts); nothing pinned. ` +
    `loadgen: bench/lib/loadgen.ts, ${CONNECTIONS} keep-alive connections over ${SOURCES.length} source addresses, 50 requests per connection, ${WARMUP_MS / 1000}+${DURATION_MS / 1000} s. ` +
    `autocannon: 10 connections from 127.0.0.1 (whitelisted for the run), ${AC_DURATION} s. Flood: bench/lib/loadgen.ts from one address over 32 keep-alive connections; ban decided = the entry's since (stamped where it was decided) minus the flood's start; listed = when GET /api/blacklist/{ip} first said listed (polled every ~5 ms; with workers one IPC hop after the decision); flood requests at the origin = the flood's requests answered 2xx until 0.5 s after the listing. ` +
    `CPU: user+system of the primary and every worker over the measured window, divided by requests served. Median of ${ROUNDS} round(s), order alternating.\n\n${table(head, rows)}\n\n` +
    `New connection per request: 32 connections, each closed after one request and reopened from the next of the 1024 sources (with workers, every one is handed over by the primary). ` +
    `Refused at accept: 32 connections at a time from one blacklisted address.\n\n${table(head2, rows2)}\n\n` +
    `References, the same two loads (autocannon not whitelisted: nothing to whitelist) on nginx (worker_processes 1 without a master, or a master and N workers; proxy_pass to the same origin; CPU of the master and every worker) ` +
    `and on the undici floor (bench/servers/undici-forwarder.ts, N processes sharing the port with SO_REUSEPORT), new processes for every measurement: ` +
    `what another process costs on this machine whatever the proxy, since the processes share the two cores with the load generator and the origin.\n\n${rows3.length ? table(head3, rows3) : ''}${skippedRefs ? `\n\n_${skippedRefs}_` : ''}\n`;
  console.log(`\nwritten ${writeResult('workers.md', md)}`);
}

main().catch(async (e) => { console.error('bench failed:', e); await stopAll(); process.exit(1); });
