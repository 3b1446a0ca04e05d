// The detector's per-request cost without sockets: judge() then observe() for
// one request, on a fake clock, through the filter's public factory. HTTP
// throughput on a shared 2-core machine moves by ±10% from run to run; this
// moves by a few percent, so it is the figure to compare two versions of the
// source table. Each case runs in its own child process (a fresh JIT and
// heap), and with --baseline the two trees alternate round by round so that
// the machine's noise falls on both alike.
// usage: node bench/detector-micro.ts [--baseline DIR] [--rounds N] [--ops N] [--cases 0,1,2]
//   DIR: a tree with the other version's src/ (e.g. `git worktree add /tmp/base main`, or
//   `mkdir /tmp/base && git archive main src | tar -x -C /tmp/base && ln -s $PWD/node_modules /tmp/base/`).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from './lib/proc.ts';

const { values } = parseArgs({ options: {
  baseline: { type: 'string' }, rounds: { type: 'string', default: '5' }, ops: { type: 'string', default: '2000000' },
  cases: { type: 'string', default: '0,1,2' }, child: { type: 'string' }, root: { type: 'string' }, sources: { type: 'string' }, 'max-sources': { type: 'string' },
} });

/** Cases: how many distinct sources take turns, and how large the table is (smaller: every request evicts). */
const CASES = [
  { name: '1k sources', sources: 1024, maxSources: 100_000 },
  { name: '100k sources', sources: 100_000, maxSources: 100_000 },
  { name: '1M sources, table 100k (evicting)', sources: 1_000_000, maxSources: 100_000 },
];

if (values.child) await child(values.root!, Number(values.sources), Number(values['max-sources']), Number(values.ops));
else parent();

async function child(root: string, nSources: number, maxSources: number, ops: number): Promise<void> {
  const { loadConfigObject } = await import(path.join(root, 'src/config/load.ts'));
  const { createFilter } = await import(path.join(root, 'src/app/build-filter.ts'));
  const { openStore } = await import(path.join(root, 'src/store/db.ts'));
  const { createLogger } = await import(path.join(root, 'src/log.ts'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-micro-'));
  const r = loadConfigObject({ log: { level: 'silent' }, state: { dir }, filter: { mode: 'auto', maxSources }, domains: [{ name: 'micro.test', upstreams: ['127.0.0.1:9'] }] }, {});
  if (!r.ok) throw new Error(r.problems.join('; '));
  const clock = { now: 1_700_000_000_000 };
  const db = openStore(dir);
  const f = createFilter(r.config, { db, log: createLogger('silent'), now: () => clock.now });
  const d = f.detector;
  const domain = r.config.domains[0];
  const headers = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0', accept: 'text/html,*/*', 'accept-language': 'en' };
  // Source strings made once, as a connection makes its source key once for all its requests.
  const sources = Array.from({ length: nSources }, (_, i) => `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`);
  const heads = ['/', '/static/app.css', '/static/app.js', '/about'].map((url) => sources.map((source) => ({
    method: 'GET', version: '1.1', url, rawHeaders: [], headers, authority: 'micro.test', source, client: source, tls: false, newConnection: false, headBytes: 200,
  })));
  const obs = (source: string, url: string) => ({
    domain: 'micro.test', source, client: source, method: 'GET', path: url, status: 200, bytesIn: 200, bytesOut: 2000, durationMs: 1,
    contentType: url.endsWith('.css') ? 'text/css' : url.endsWith('.js') ? 'text/javascript' : 'text/html', outcome: 'passed',
    proxyReason: null, upstreamError: null, newConnection: false, queuedMs: 0, upstreamMs: 1,
  });
  const observations = heads.map((hs) => hs.map((h) => obs(h.source, h.url)));
  // The clock moves 1 ms per request, so a source's turns are nSources ms apart (≤ 1 req/s each): nothing overflows.
  const run = (n: number, from: number) => {
    for (let i = from; i < from + n; i++) {
      const s = i % nSources, k = Math.floor(i / nSources) & 3;
      if (d.judge(heads[k][s], domain, false).kind !== 'pass') throw new Error('not passed: the bench must not ban');
      d.observe(observations[k][s]);
      clock.now += 1;
      if ((i & 1023) === 0) f.tick();
    }
  };
  const warm = Math.max(4 * nSources, 500_000);
  run(warm, 0); // warm-up: every source seen, the JIT settled
  // CPU time, not wall time: on a shared machine the process waits for a core, and that wait is not its cost.
  const c0 = process.cpuUsage(), t0 = process.hrtime.bigint();
  run(ops, warm);
  const c = process.cpuUsage(c0);
  const wall = Number(process.hrtime.bigint() - t0) / ops;
  const ns = (c.user + c.system) * 1000 / ops;
  await f.close();
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(JSON.stringify({ ns, wall, tracked: d.sourcesTracked }));
}

function parent(): void {
  const trees = [{ label: 'this tree', root: ROOT }, ...(values.baseline ? [{ label: 'baseline', root: path.resolve(values.baseline) }] : [])];
  const rounds = Number(values.rounds);
  console.log(`detector micro-bench: CPU time (user+system, all threads of the process: GC included) per judge()+observe(), fake clock, filter.mode auto (no attack), ${values.ops} requests per run, ${rounds} rounds, trees alternating; ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  for (const c of values.cases!.split(',').map((i) => CASES[Number(i)])) {
    const ns = trees.map(() => [] as number[]);
    for (let r = 0; r < rounds; r++) {
      trees.forEach((t, i) => {
        const out = execFileSync(process.execPath, [import.meta.filename, '--child', 'x', '--root', t.root, '--sources', String(c.sources), '--max-sources', String(c.maxSources), '--ops', values.ops!], { encoding: 'utf8' });
        ns[i].push((JSON.parse(out.trim().split('\n').pop()!) as { ns: number }).ns);
      });
    }
    const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
    const cells = trees.map((t, i) => `${t.label} ${med(ns[i]).toFixed(0)} ns/op (runs ${ns[i].map((x) => x.toFixed(0)).join(' ')})`);
    const ratio = trees.length === 2 ? `  → this/baseline ${(med(ns[0]) / med(ns[1])).toFixed(2)}×` : '';
    console.log(`${c.name.padEnd(36)} ${cells.join(' | ')}${ratio}`);
  }
}
