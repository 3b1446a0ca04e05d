// `npm run bench:autocannon [-- --duration S --connections N]`
// What an operator sees when load-testing Scrubber with autocannon, the way
// the seeds' users do (`npx autocannon http://127.0.0.1:8080/`): one address,
// 10 keep-alive connections, as fast as the proxy answers. Two runs, each on
// a fresh Scrubber (default filter mode "auto") in front of the bench origin:
//   1. as is: the load generator's address is a flood source, and is banned;
//   2. with 127.0.0.1 whitelisted first (PUT /api/whitelist/127.0.0.1, what
//      scripts/loadtest.sh does): the figures are the proxy's throughput.
// Printed: req/s, latency, 2xx / non-2xx, connection errors, and whether (and
// when) the address got banned. Results: terminal and bench/results/autocannon.md.
// The origin is bench/servers/fast-origin.ts; processes are started and
// stopped by PID through bench/lib/proc.ts.
import path from 'node:path';
import { parseArgs } from 'node:util';
// @ts-ignore autocannon ships no type declarations; the few fields used are typed below.
import autocannonUntyped from 'autocannon';
import { startNode, startScrubber, stopAll, freePort, waitForPort, ROOT } from './lib/proc.ts';
import { table, textTable, writeResult, fmt, machineLine } from './lib/report.ts';

interface AcResult {
  requests: { average: number; total: number; sent: number };
  latency: { p50: number; p90: number; p99: number; average: number; max: number };
  '2xx': number; non2xx: number; errors: number; timeouts: number; resets: number; duration: number;
}
const autocannon = autocannonUntyped as (o: Record<string, unknown>) => Promise<AcResult>;

const { values: args } = parseArgs({ options: { duration: { type: 'string' }, connections: { type: 'string' } } });
const DURATION = Number(args.duration ?? 5);
const CONNECTIONS = Number(args.connections ?? 10);
const SOURCE = '127.0.0.1';

interface Row { name: string; r: AcResult; bannedAfterMs: number | null; listedAtEnd: boolean }

async function run(name: string, whitelist: boolean, originPort: number): Promise<Row> {
  const s = await startScrubber({ name, upstream: `127.0.0.1:${originPort}`, domain: 'bench.test', mode: 'auto', cpu: 0 });
  try {
    if (whitelist) {
      const res = await fetch(`${s.adminUrl}/api/whitelist/${SOURCE}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ note: 'bench/autocannon.ts' }) });
      if (res.status !== 200) throw new Error(`PUT /api/whitelist/${SOURCE} → ${res.status} ${await res.text()}`);
    }
    const listed = async () => {
      const res = await fetch(`${s.adminUrl}/api/blacklist/${SOURCE}`).catch(() => null);
      return res?.status === 200 ? ((await res.json()) as { listed: boolean }).listed : false;
    };
    // Poll the blacklist while the load runs: when was the load generator banned?
    const t0 = Date.now();
    let bannedAfterMs: number | null = null;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        if (bannedAfterMs === null && (await listed())) bannedAfterMs = Date.now() - t0;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const r = await autocannon({ url: `http://127.0.0.1:${s.port}/`, connections: CONNECTIONS, duration: DURATION });
    polling = false;
    await poller;
    return { name, r, bannedAfterMs, listedAtEnd: await listed() };
  } finally {
    await s.child.stop();
  }
}

async function main() {
  const originPort = await freePort();
  const origin = startNode(path.join(ROOT, 'bench/servers/fast-origin.ts'), [String(originPort)], { name: 'origin', cpu: 1 });
  await waitForPort(originPort, origin);
  const rows: Row[] = [];
  rows.push(await run('as is (not whitelisted)', false, originPort));
  rows.push(await run(`${SOURCE} whitelisted`, true, originPort));
  await stopAll();

  const head = ['run', 'req/s', 'p50 ms', 'p99 ms', 'max ms', '2xx', 'non-2xx', 'errors', 'timeouts', 'banned'];
  const body = rows.map(({ name, r, bannedAfterMs, listedAtEnd }) => [
    name, fmt(r.requests.average), fmt(r.latency.p50), fmt(r.latency.p99), fmt(r.latency.max), r['2xx'], r.non2xx, r.errors, r.timeouts,
    bannedAfterMs !== null ? `yes, after ${(bannedAfterMs / 1000).toFixed(1)} s` : listedAtEnd ? 'yes' : 'no',
  ]);
  const setup = `autocannon ${CONNECTIONS} connections × ${DURATION} s from ${SOURCE} against a fresh Scrubber (filter.mode auto, pinned to core 0) in front of bench/servers/fast-origin.ts (core 1); autocannon itself unpinned.`;
  console.log(`\n${setup}\n\n${textTable(head, body)}\n`);
  const file = writeResult('autocannon.md', `# autocannon through Scrubber\n\n${machineLine()}\n\n${setup}\n\n${table(head, body)}\n\n` +
    'The first run is what `npx autocannon http://127.0.0.1:8080/` shows an operator: the load generator\'s one address is a flood source and is banned, ' +
    'after which its connections are dropped at accept (the errors column). The second whitelists the address first ' +
    '(`scripts/loadtest.sh` / `npm run loadtest` does this and removes the entry afterwards).\n');
  console.log(`written: ${file}`);
}

main().catch(async (e) => { console.error(e); await stopAll(); process.exit(1); });
