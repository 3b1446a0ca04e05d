// `node bench/stats-rebuild.ts [--domains 10] [--days 60]`
// When Redis lost its data, each node pushes its whole statistics again
// (StatsStore.rebuildOutbox): every stored bucket is read and queued. A full
// store is millions of rows. This measures, on a real store file, how long the
// rebuild takes and the longest the event loop waits meanwhile (a timer every
// millisecond; the proxy serves nothing while it waits), read in one go (as
// before 2026-11-28: one transaction) and in steps with a turn of the event
// loop between them (as now), side by side in one run on the same store.
// Results: terminal and bench/results/stats-rebuild.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openStore } from '../src/store/db.ts';
import { StatsStore } from '../src/stats/store.ts';
import { FIELDS, GLOBAL_FIELDS } from '../src/stats/buckets.ts';
import { table, writeResult, fmt, machineLine } from './lib/report.ts';

const { values: args } = parseArgs({ options: { domains: { type: 'string', default: '10' }, days: { type: 'string', default: '60' } } });
const DOMAINS = Number(args.domains), BUCKETS = Number(args.days) * 480; // 3-minute buckets

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-rebuild-'));
const db = openStore(dir);
const store = new StatsStore(db);
const t0 = bucket0();
function bucket0(): number { const s = Math.floor(Date.now() / 1000) - BUCKETS * 180; return s - (s % 180); }
for (let b = 0; b < BUCKETS; b += 500) {
  const domains = [], globals = [];
  for (let k = b; k < Math.min(BUCKETS, b + 500); k++) {
    for (let d = 0; d < DOMAINS; d++) domains.push({ domain: `site${d}.test`, t: t0 + k * 180, c: Float64Array.from(FIELDS, (_, i) => (i * 7 + k) % 1000) });
    globals.push({ t: t0 + k * 180, g: Float64Array.from(GLOBAL_FIELDS, (_, i) => i + 1) });
  }
  store.write(domains, globals);
}
const rowsStored = DOMAINS * BUCKETS + BUCKETS;

/** Runs one rebuild while a 1 ms timer notes how late it fires: total ms, longest wait, rows queued. */
async function measure(pause: () => Promise<void>): Promise<{ ms: number; stall: number; rows: number }> {
  let last = performance.now(), stall = 0;
  const timer = setInterval(() => { const now = performance.now(); stall = Math.max(stall, now - last); last = now; }, 1);
  await new Promise((r) => setTimeout(r, 20));
  last = performance.now();
  const t = performance.now();
  const rows = await store.rebuildOutbox(`e${Math.random()}`, pause);
  const ms = performance.now() - t;
  await new Promise((r) => setTimeout(r, 20));
  clearInterval(timer);
  return { ms, stall: Math.max(stall, performance.now() - last), rows };
}

const results: [string, Awaited<ReturnType<typeof measure>>][] = [];
// Twice each, interleaved: the first read of the file warms the page cache for both.
for (let round = 0; round < 2; round++) {
  // An already-resolved promise yields to microtasks only: timers and sockets wait for the whole rebuild.
  results.push(['in one go (before)', await measure(async () => {})]);
  results.push(['in steps (now)', await measure(() => new Promise((r) => setImmediate(r)))]);
}
db.close();
fs.rmSync(dir, { recursive: true, force: true });

const rows = results.slice(2).map(([name, r]) => [name, fmt(r.ms), fmt(r.stall, 1), r.rows]);
const header = ['rebuild', 'total ms', 'longest event-loop wait ms', 'outbox rows queued'];
const md = `# Statistics rebuilt after Redis lost its data\n\n${machineLine()}\n\nCommand: \`node bench/stats-rebuild.ts --domains ${DOMAINS} --days ${args.days}\`: a store of ${DOMAINS} domains × ${BUCKETS} three-minute buckets (${rowsStored.toLocaleString('en')} rows); each way run twice, interleaved, the second shown.\n\n${table(header, rows)}\n`;
console.log(md);
console.log(`written: ${writeResult('stats-rebuild.md', md)}`);
