// `npm run bench [-- --smoke] [-- --duration S --warmup S --rounds N --connections N --only a,b] [-- --baseline DIR] [-- --fresh]`
// --baseline DIR: also runs the Scrubber of another checkout (e.g. a `git worktree` of the
// previous commit) as targets baseline / baseline-off, interleaved with this one, so a
// change to the hot path is measured before and after in one run on the same load.
// --fresh: every Scrubber target (and baseline) is a new process each round. Measured here: one Node process of
// the proxy may run 10-25% slower than another of the same code for its whole life (its JIT and heap settle
// differently), so a comparison of one process against one other can land either way; with --fresh each round is
// another draw and the median of the rounds' ratios compares the code.
// Throughput of Scrubber against the alternatives, side by side in one run,
// on loopback, same origin, same load generator; then what refusing a
// blacklisted connection costs, and memory with a million sources tracked.
// Results: terminal and bench/results/throughput.md.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { start, startNode, startScrubber, stopAll, freePort, waitForPort, cpuSeconds, tools, ROOT, NODE, type Child } from './lib/proc.ts';
import { startNginx, startHaproxy, type ThirdParty } from './lib/thirdparty.ts';
import { table, textTable, writeResult, fmt, machineLine } from './lib/report.ts';
import type { Options as LoadOptions, Result as LoadResult } from './lib/loadgen.ts';

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    duration: { type: 'string' }, warmup: { type: 'string' }, rounds: { type: 'string' },
    connections: { type: 'string' }, only: { type: 'string' }, baseline: { type: 'string' }, fresh: { type: 'boolean', default: false },
  },
});
const smoke = args.smoke!;
const DURATION_MS = Number(args.duration ?? (smoke ? 2 : 8)) * 1000;
const WARMUP_MS = Number(args.warmup ?? (smoke ? 1 : 2)) * 1000;
const ROUNDS = Number(args.rounds ?? (smoke ? 1 : 3));
const CONNECTIONS = Number(args.connections ?? 64);
const only = args.only ? new Set(args.only.split(',')) : null;

// Two cores here: the server under test gets core 0 to itself; the origin and
// the load generator share core 1 (the origin's cost is then outside every
// proxy's core). With more cores, each gets its own.
const cores = navigator.hardwareConcurrency;
const CPU = { server: 0, client: cores > 2 ? 2 : 1, origin: 1 };
const HOST = 'bench.test';
// Clean traffic: 1024 sources (127.3.x.y); each connection makes REQS_PER_CONN
// requests then reopens from the next source, so each source averages about
// (req/s ÷ 1024) req/s, in short keep-alive bursts, like a crowd of browsers —
// not one address at 10k req/s, which a filter in "always" mode rightly bans.
const SOURCES = Array.from({ length: 1024 }, (_, i) => `127.3.${Math.floor(i / 250)}.${(i % 250) + 1}`);
const REQS_PER_CONN = 50;
const BANNED = ['127.9.0.1', '127.9.0.2', '127.9.0.3', '127.9.0.4'];

interface Target { name: string; port: number; pid: number; note?: string; adminUrl?: string; restart?: () => Promise<void> }
interface Measured { rps: number; p50: number; p99: number; cpuUsPerReq: number | null; errors: number; non2xx: number }

function runLoad(o: LoadOptions, serverPid: number | null): Promise<{ r: LoadResult; cpu: number | null }> {
  const child = startNode(path.join(ROOT, 'bench/lib/loadgen.ts'), [JSON.stringify(o)], { name: 'loadgen', cpu: CPU.client, stdout: 'pipe', ipc: true });
  let out = '';
  child.proc.stdout!.on('data', (c) => { out += c; });
  let c0: number | null = null, c1: number | null = null;
  child.proc.on('message', (m: { event: string }) => {
    if (serverPid == null) return;
    if (m.event === 'measure-start') c0 = cpuSeconds(serverPid);
    if (m.event === 'measure-end') c1 = cpuSeconds(serverPid);
  });
  return child.exited.then((code) => {
    if (code !== 0) throw new Error(`load generator exited with ${code}`);
    const r = JSON.parse(out.trim().split('\n').pop()!) as LoadResult;
    return { r, cpu: c0 != null && c1 != null ? c1 - c0 : null };
  });
}

async function measure(t: Target): Promise<Measured> {
  const { r, cpu } = await runLoad({ mode: 'http', port: t.port, connections: CONNECTIONS, sources: SOURCES, warmupMs: WARMUP_MS, durationMs: DURATION_MS, hostHeader: HOST, requestsPerConnection: REQS_PER_CONN }, t.pid);
  return { rps: r.perSec, p50: r.p50ms, p99: r.p99ms, cpuUsPerReq: cpu != null && r.count ? (cpu * 1e6) / r.count : null, errors: r.errors, non2xx: r.statusOther };
}

/** With --fresh, the target can be replaced by a new process of the same kind (same config, new port). */
function restartable(t: Target, child: Child, again: () => Promise<{ child: Child; port: number; adminUrl: string }>): Target {
  let current = child;
  t.restart = async () => {
    await current.stop();
    const s = await again();
    current = s.child;
    t.port = s.port;
    t.pid = s.child.pid;
    t.adminUrl = s.adminUrl;
  };
  return t;
}

async function startServers() {
  const skipped: string[] = [];
  const originPort = await freePort();
  const origin = startNode(path.join(ROOT, 'bench/servers/fast-origin.ts'), [String(originPort)], { name: 'origin', cpu: CPU.origin });
  await waitForPort(originPort, origin);
  const targets: Target[] = [{ name: 'origin (direct)', port: originPort, pid: origin.pid, note: 'no proxy' }];
  const want = (n: string) => !only || only.has(n);

  if (want('scrubber')) {
    const again = () => startScrubber({ upstream: `127.0.0.1:${originPort}`, domain: HOST, mode: 'always', cpu: CPU.server });
    const s = await again();
    targets.push(restartable({ name: 'scrubber', port: s.port, pid: s.child.pid, note: 'filter.mode always', adminUrl: s.adminUrl }, s.child, again));
  }
  if (want('scrubber-off')) {
    // The same proxy with the filter only observing: the difference is what filtering costs.
    const again = () => startScrubber({ name: 'scrubber-off', upstream: `127.0.0.1:${originPort}`, domain: HOST, mode: 'off', cpu: CPU.server });
    const s = await again();
    targets.push(restartable({ name: 'scrubber-off', port: s.port, pid: s.child.pid, note: 'filter.mode off (observe only)' }, s.child, again));
  }
  if (args.baseline) {
    const root = path.resolve(args.baseline);
    for (const [name, mode] of [['baseline', 'always'], ['baseline-off', 'off']] as const) {
      if (only && !only.has(name) && !only.has(name.replace('baseline', 'scrubber'))) continue;
      const again = () => startScrubber({ name, root, upstream: `127.0.0.1:${originPort}`, domain: HOST, mode, cpu: CPU.server });
      const s = await again();
      targets.push(restartable({ name, port: s.port, pid: s.child.pid, note: `${root}, filter.mode ${mode}` }, s.child, again));
    }
  }
  for (const [name, script] of [['undici-floor', 'undici-forwarder.ts'], ['http-proxy-3', 'http-proxy3.ts']] as const) {
    if (!want(name)) continue;
    const port = await freePort();
    const c: Child = startNode(path.join(ROOT, 'bench/servers', script), [String(port), String(originPort)], { name, cpu: CPU.server });
    await waitForPort(port, c);
    targets.push({ name, port, pid: c.pid });
  }
  for (const [name, fn] of [['nginx', startNginx], ['haproxy', startHaproxy]] as const) {
    if (!want(name)) continue;
    const r: ThirdParty | { skipped: string } = await fn(originPort, 'plain', CPU.server);
    if ('skipped' in r) { skipped.push(`${name}: skipped — ${r.skipped}`); continue; }
    targets.push({ name, port: r.port, pid: r.child.pid, note: name === 'nginx' ? 'worker_processes 1' : 'nbthread 1' });
  }
  return { targets, skipped };
}

async function refusalCost(t: Target | undefined, adminUrl: string | undefined, served: Measured | undefined): Promise<{ lines: string[]; md: string }> {
  if (!t || !adminUrl || !served) return { lines: ['refusal cost: skipped (scrubber not measured)'], md: '_skipped: scrubber not measured_' };
  for (const ip of BANNED) {
    const res = await fetch(`${adminUrl}/api/blacklist/${ip}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttlSeconds: 600, reason: 'bench' }) }).catch((e: Error) => ({ status: 0, text: async () => e.message }));
    if (res.status === 404) return { lines: ['refusal cost: skipped: filter not available (PUT /api/blacklist → 404)'], md: '_skipped: filter not available (PUT /api/blacklist → 404)_' };
    if (res.status < 200 || res.status >= 300) return { lines: [`refusal cost: skipped: PUT /api/blacklist/${ip} → ${res.status} ${await res.text()}`], md: `_skipped: blacklist PUT answered ${res.status}_` };
  }
  await new Promise((r) => setTimeout(r, 300));
  const { r, cpu } = await runLoad({ mode: 'refuse', port: t.port, connections: 32, sources: BANNED, warmupMs: WARMUP_MS, durationMs: DURATION_MS, hostHeader: HOST }, t.pid);
  const cpuPerRefusal = cpu != null && r.count ? (cpu * 1e6) / r.count : null;
  const ratio = cpuPerRefusal != null && served.cpuUsPerReq ? cpuPerRefusal / served.cpuUsPerReq : null;
  const verdict = ratio == null ? 'unknown' : ratio <= 1 / 3 ? 'met' : 'NOT MET';
  const rows: (string | number)[][] = [
    ['served requests (clean sources)', fmt(served.rps), fmt(served.cpuUsPerReq, 1)],
    ['refused connections (blacklisted source)', fmt(r.perSec), fmt(cpuPerRefusal, 1)],
  ];
  const head = ['', 'per second', 'proxy CPU µs each'];
  const extra = r.served ? ` — WARNING: ${r.served} connections from blacklisted sources got an HTTP response` : '';
  const line = `refusing costs ${ratio == null ? '?' : ratio.toFixed(2)}× the CPU of serving a request (target ≤ 0.33×): ${verdict}${extra}`;
  return { lines: [textTable(head, rows), line], md: `${table(head, rows)}\n\n${line}` };
}

async function filterMemory(): Promise<{ line: string; md: string }> {
  // With the default bound (a million sources pass through a bounded table), with room for all of them, and with room
  // for all of them as IPv6 peers (a /64 each).
  const n = smoke ? 100_000 : 1_000_000;
  const lines: string[] = [];
  for (const extra of [[], ['--max-sources', String(n)], ['--max-sources', String(n), '--ipv6']]) {
    const child = start(NODE, ['--no-warnings', '--expose-gc', '--max-old-space-size=8192', path.join(ROOT, 'bench/filter-memory.ts'), '--sources', String(n), ...extra], { name: 'filter-memory', stdout: 'pipe', cpu: CPU.server });
    let out = '';
    child.proc.stdout!.on('data', (c) => { out += c; });
    const timer = setTimeout(() => { out += ' (stopped: over the time limit)'; child.stop(); }, smoke ? 20_000 : 90_000);
    const code = await child.exited;
    clearTimeout(timer);
    lines.push(out.trim() || `memory probe exited with ${code} and printed nothing`);
    if (out.startsWith('skipped')) break;
  }
  return { line: lines.map((l) => `memory: ${l}`).join('\n'), md: lines.map((l) => `- ${l}`).join('\n') };
}

async function main() {
  const t0 = Date.now();
  console.log(`Scrubber throughput bench${smoke ? ' (smoke)' : ''}: ${ROUNDS} round(s) × ${WARMUP_MS / 1000}+${DURATION_MS / 1000} s per target, ${CONNECTIONS} keep-alive connections from ${SOURCES.length} sources, ${REQS_PER_CONN} requests per connection`);
  if (args.fresh) console.log('--fresh: each Scrubber target is a new process every round');
  console.log(`cores: server under test on ${CPU.server}, load generator on ${CPU.client}, origin on ${CPU.origin}${tools.taskset ? '' : ' (taskset missing: NOT pinned)'}`);
  const { targets, skipped } = await startServers();
  for (const s of skipped) console.log(s);
  // The median round per target (by req/s): on a shared VM one lucky round of one target would otherwise
  // decide a ratio; targets run interleaved, round after round, so slow spells hit them all alike.
  const rounds = new Map<string, Measured[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    // The order turns by one each round, so no target always runs right after the same other one
    // (a round leaves sockets in TIME_WAIT and a warm origin behind it).
    const shift = (round - 1) % targets.length;
    for (const t of [...targets.slice(shift), ...targets.slice(0, shift)]) {
      if (args.fresh && round > 1) await t.restart?.();
      const m = await measure(t);
      console.log(`  round ${round} ${t.name.padEnd(16)} ${fmt(m.rps).padStart(7)} req/s  p50 ${fmt(m.p50, 2)} ms  p99 ${fmt(m.p99, 2)} ms  cpu ${fmt(m.cpuUsPerReq, 1)} µs/req${m.errors || m.non2xx ? `  errors ${m.errors} non-2xx ${m.non2xx}` : ''}`);
      rounds.set(t.name, [...(rounds.get(t.name) ?? []), m]);
    }
  }
  const median = new Map<string, Measured>();
  for (const [name, ms] of rounds) median.set(name, [...ms].sort((a, b) => a.rps - b.rps)[Math.floor((ms.length - 1) / 2)]);
  const ref = (n: string) => median.get(n)?.rps;
  const rows = targets.map((t) => {
    const m = median.get(t.name)!;
    const ratio = (n: string) => (ref(n) ? fmt(m.rps / ref(n)!, 2) + '×' : '–');
    return [t.name, fmt(m.rps), fmt(m.p50, 2), fmt(m.p99, 2), fmt(m.cpuUsPerReq, 1), ratio('undici-floor'), ratio('http-proxy-3'), ratio('nginx'), `${m.non2xx} / ${m.errors}`];
  });
  const head = ['target', 'req/s', 'p50 ms', 'p99 ms', 'server CPU µs/req', 'vs undici floor', 'vs http-proxy-3', 'vs nginx', 'non-2xx / socket errors'];
  console.log(`\nmedian of ${ROUNDS} round(s):\n` + textTable(head, rows));
  for (const [now, base] of [['scrubber', 'baseline'], ['scrubber-off', 'baseline-off']]) {
    // CPU per request rather than req/s: the load generator shares the machine, CPU per request does not depend on it.
    const a = median.get(now)?.cpuUsPerReq, b = median.get(base)?.cpuUsPerReq;
    if (!a || !b) continue;
    // Also the median of each round's own ratio: the two ran minutes apart at most within a round, so a slow spell of
    // the VM that spans a round moves both, where the ratio of two medians may pair a slow round with a fast one.
    const perRound = rounds.get(now)!.map((m, i) => (m.cpuUsPerReq ?? NaN) / (rounds.get(base)![i].cpuUsPerReq ?? NaN)).filter(Number.isFinite);
    const mr = [...perRound].sort((x, y) => x - y), mid = mr.length ? (mr[(mr.length - 1) >> 1] + mr[mr.length >> 1]) / 2 : NaN;
    console.log(`${now} vs ${base}: CPU per request ${fmt(a, 1)} / ${fmt(b, 1)} µs = ${(a / b).toFixed(2)}×; median of the rounds' ratios ${mid.toFixed(2)}× (rounds: ${rounds.get(now)!.map((m) => fmt(m.cpuUsPerReq, 1)).join(', ')} vs ${rounds.get(base)!.map((m) => fmt(m.cpuUsPerReq, 1)).join(', ')})`);
  }

  const sc = median.get('scrubber');
  const targetsLines: string[] = [];
  const check = (label: string, other: string, min: number) => {
    const o = median.get(other);
    if (!sc || !o) { targetsLines.push(`${label}: skipped (${!sc ? 'scrubber' : other} not measured)`); return; }
    const r = sc.rps / o.rps;
    const cpuR = sc.cpuUsPerReq && o.cpuUsPerReq ? o.cpuUsPerReq / sc.cpuUsPerReq : null;
    // Both ways: req/s is what the issue asks; CPU per request does not depend on whether the other side (origin, generator) kept up.
    targetsLines.push(`${label} (target ≥ ${min}×): by req/s ${r.toFixed(2)}× ${r >= min ? 'met' : 'NOT MET'}; by CPU per request ${cpuR == null ? '?' : `${cpuR.toFixed(2)}× ${cpuR >= min ? 'met' : 'NOT MET'}`}`);
  };
  check('scrubber vs undici floor', 'undici-floor', 0.9);
  check('scrubber vs http-proxy-3', 'http-proxy-3', 2); // issue #11: per worker, filter on, at least twice http-proxy-3
  check('scrubber vs nginx', 'nginx', 0.45);
  const direct = median.get('origin (direct)');
  const nginx = median.get('nginx');
  if (direct && nginx && nginx.cpuUsPerReq && nginx.rps * nginx.cpuUsPerReq / 1e6 < 0.85) targetsLines.push(`note: nginx used only ${(nginx.rps * nginx.cpuUsPerReq / 1e4).toFixed(0)}% of its core (${(nginx.rps / direct.rps * 100).toFixed(0)}% of the direct origin rate): it was limited by the origin/load-generator core or by other load on the machine, not its own; the CPU-per-request ratio is the fairer comparison against it.`);
  console.log('\n' + targetsLines.join('\n'));

  console.log('\nrefusing blacklisted connections:');
  const scrubberTarget = targets.find((t) => t.name === 'scrubber');
  const refusal = await refusalCost(scrubberTarget, scrubberTarget?.adminUrl, sc);
  console.log(refusal.lines.join('\n'));
  const mem = await filterMemory();
  console.log(mem.line);
  await stopAll();

  const md = `# Throughput bench\n\n${machineLine()}${smoke ? ' — **smoke run (tiny durations, not a measurement)**' : ''}\n\n` +
    `Command: \`npm run bench${smoke ? ' -- --smoke' : ''}\`. ${ROUNDS} round(s), the target order turned by one each round, the median round per target (by req/s); each: ${WARMUP_MS / 1000} s warm-up, ${DURATION_MS / 1000} s measured; ` +
    `${CONNECTIONS} keep-alive connections over ${SOURCES.length} source addresses, each reopened from the next address after ${REQS_PER_CONN} requests (bench/lib/loadgen.ts, closed loop). ` +
    `Server under test pinned to core ${CPU.server}; origin (bench/servers/fast-origin.ts) on core ${CPU.origin}; load generator on core ${CPU.client}. ` +
    `non-2xx are expected from Scrubber only as its one-time cookie challenge (302) to each new source (the generator keeps cookies per source, as browsers do). "server CPU µs/req" is the user+system time of the server process (/proc/<pid>/stat) over the measured window divided by the requests served.\n\n` +
    `${skipped.map((s) => `- ${s}`).join('\n')}\n\n${table(head, rows)}\n\n## Targets\n\n${targetsLines.map((l) => `- ${l}`).join('\n')}\n\n` +
    `## Refusing blacklisted connections\n\n${refusal.md}\n\n## Memory with a million sources tracked\n\n${mem.md}\n`;
  const file = writeResult('throughput.md', md);
  console.log(`\nwritten ${file} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

main().catch(async (e) => {
  console.error('bench failed:', e);
  await stopAll();
  process.exit(1);
});
