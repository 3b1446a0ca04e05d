// `node bench/redis-catchup.ts [--bans 100000]`
// A node back from a cut reads what is in force in Redis and works out what
// changed (store/redis-resync.ts). With many bans in force (a botnet banned
// address by address) that read is large. This measures, on a real
// redis-server holding N bans, the read and the diff, and the longest the event
// loop waits meanwhile (a timer every millisecond; the node serves nothing while
// it waits): read and compared at once (HGETALL, as before 2026-11-28) and in
// steps (HSCAN, then the comparison, with a turn of the event loop between
// steps, as now), side by side in one run.
// Results: terminal and bench/results/redis-catchup.md.
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { startRedis } from '../test/helpers/redis.ts';
import { Known, pause, readState } from '../src/store/redis-resync.ts';
import { redisKeys } from '../src/store/redis-keys.ts';
import { table, writeResult, fmt, machineLine } from './lib/report.ts';

const { values: args } = parseArgs({ options: { bans: { type: 'string', default: '100000' } } });
const N = Number(args.bans);
const redis = await startRedis();
const raw = new Redis(redis.url);
const k = redisKeys('catchup:');
const now = Date.now();
for (let i = 0; i < N; i += 5000) {
  const m = raw.pipeline();
  for (let j = i; j < Math.min(N, i + 5000); j++) {
    const ip = `10.${(j >> 16) & 255}.${(j >> 8) & 255}.${j & 255}`;
    m.hset(k.bans, ip, JSON.stringify({ ip, reason: 'rate: 200 requests in 10 s', rule: 'rate', since: now, expiresAt: now + 3600_000 }));
    m.zadd(k.exp, now + 3600_000, ip);
  }
  await m.exec();
}

async function measure(stepped: boolean): Promise<{ ms: number; stall: number; bans: number }> {
  let last = performance.now(), stall = 0;
  const timer = setInterval(() => { const t = performance.now(); stall = Math.max(stall, t - last); last = t; }, 1);
  await new Promise((r) => setTimeout(r, 20));
  last = performance.now();
  const t0 = performance.now();
  const snap = await readState(raw, k, Date.now(), stepped ? pause : undefined);
  // A node that knew none of them: every ban is a decision to deliver (the diff; delivering is the bus's).
  if (stepped) await new Known().diffInSteps(snap, Date.now(), () => false, pause);
  else new Known().diff(snap, Date.now());
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 20));
  clearInterval(timer);
  return { ms, stall: Math.max(stall, performance.now() - last), bans: snap.bans.length };
}

const rows: (string | number)[][] = [];
for (let round = 0; round < 2; round++) {
  const once = await measure(false), steps = await measure(true);
  // The first round warms both up; the second is reported.
  if (round === 1) rows.push(['at once (HGETALL, before)', fmt(once.ms), fmt(once.stall, 1), once.bans], ['in steps (HSCAN, now)', fmt(steps.ms), fmt(steps.stall, 1), steps.bans]);
}
raw.disconnect();
await redis.close();
const md = `# A catch-up read of what is in force in Redis\n\n${machineLine()}\n\nCommand: \`node bench/redis-catchup.ts --bans ${N}\`: a real redis-server holding ${N.toLocaleString('en')} bans; the read and the diff against a node that knew none, each way twice, interleaved, the second shown.\n\n${table(['read', 'total ms', 'longest event-loop wait ms', 'bans read'], rows)}\n`;
console.log(md);
console.log(`written: ${writeResult('redis-catchup.md', md)}`);
