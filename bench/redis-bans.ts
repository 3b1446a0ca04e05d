// `node bench/redis-bans.ts [--bans N]`
// Two Scrubber nodes on one real Redis (SPEC.md §9): how long from a ban made
// on node A (PUT /api/blacklist) until node B drops that source at accept,
// over N bans (p50 / p99 / max); then node B is killed (-9) and started again,
// and must come back with every live ban. Real processes, real sockets; every
// client address is in 127.0.0.0/8. Results: terminal and
// bench/results/redis-bans.md.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { start, startNode, stopAll, freePort, waitForPort, tempDir, sleep, ROOT, NODE, type Child } from './lib/proc.ts';
import { table, writeResult, fmt, machineLine } from './lib/report.ts';
import { startRedis } from '../test/helpers/redis.ts';

const { values: args } = parseArgs({ options: { bans: { type: 'string', default: '100' } } });
const BANS = Number(args.bans);
const HOST = 'bans.test';

interface Node { name: string; port: number; admin: number; file: string; child: Child }

async function startNodeProc(name: string, file: string, port: number, admin: number): Promise<Node> {
  const log = fs.openSync(file.replace(/\.json$/, '.log'), 'a');
  const child = start(NODE, ['--no-warnings', path.join(ROOT, 'bin/scrubber.js'), '--config', file], { name, stdout: log, stderr: log });
  fs.closeSync(log);
  await waitForPort(port, child);
  await waitForPort(admin, child);
  return { name, port, admin, file, child };
}

/** True when a connection from `local` is closed without an answer (dropped at accept). */
function refused(port: number, local: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: local });
    let got = false;
    const t = setTimeout(() => { s.destroy(); resolve(false); }, 500);
    s.on('connect', () => s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`));
    s.on('data', () => { got = true; });
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(t); resolve(!got); });
  });
}

const api = (n: Node, method: string, p: string, body?: unknown) =>
  fetch(`http://127.0.0.1:${n.admin}${p}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });

async function main() {
  const t0 = Date.now();
  const redis = await startRedis();
  const originPort = await freePort();
  const origin = startNode(path.join(ROOT, 'bench/servers/fast-origin.ts'), [String(originPort)], { name: 'origin' });
  await waitForPort(originPort, origin);
  const make = async (name: string) => {
    const dir = tempDir(`scrubber-bans-${name}-`);
    const port = await freePort(), admin = await freePort();
    const file = path.join(dir, 'scrubber.json');
    fs.writeFileSync(file, JSON.stringify({
      listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin, token: '' }, log: { level: 'warn' },
      state: { dir: path.join(dir, 'state'), redis: { url: redis.url } }, filter: { mode: 'auto' },
      domains: [{ name: HOST, aliases: ['127.0.0.1'], upstreams: [`127.0.0.1:${originPort}`] }],
    }));
    return startNodeProc(name, file, port, admin);
  };
  const a = await make('a');
  let b = await make('b');
  try {
    const times: number[] = [];
    let missed = 0;
    for (let i = 0; i < BANS; i++) {
      const ip = `127.78.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      const at = performance.now();
      const r = await api(a, 'PUT', `/api/blacklist/${ip}`, { ttlSeconds: 3600, reason: 'bench' });
      if (!r.ok) throw new Error(`PUT ban ${ip} on A: ${r.status} ${await r.text()}`);
      // Bounded: 3 s per ban; a ban not in force on B by then counts as missed.
      let dropped = false;
      while (!dropped && performance.now() - at < 3000) dropped = await refused(b.port, ip);
      if (dropped) times.push(performance.now() - at); else missed++;
    }
    times.sort((x, y) => x - y);
    const q = (p: number) => times[Math.min(times.length - 1, Math.ceil(p * times.length) - 1)];
    const p99 = q(0.99);
    const verdict = missed === 0 && p99 <= 1000 ? 'met' : 'NOT MET';

    // Node B dies without a goodbye and comes back: it must rejoin with every live ban.
    process.kill(b.child.pid, 'SIGKILL');
    await b.child.exited;
    // Bans made while B is down reach it only through Redis (its own store never saw them).
    const WHILE_DOWN = 10;
    for (let i = 0; i < WHILE_DOWN; i++) {
      const r = await api(a, 'PUT', `/api/blacklist/127.79.0.${i + 1}`, { ttlSeconds: 3600, reason: 'bench, B down' });
      if (!r.ok) throw new Error(`PUT ban on A while B is down: ${r.status}`);
    }
    const { port, admin, file } = b;
    const restartAt = performance.now();
    b = await startNodeProc('b', file, port, admin);
    const upMs = performance.now() - restartAt;
    const list = (await (await api(b, 'GET', '/api/blacklist')).json()) as { entries: { ip: string }[] };
    const live = list.entries.filter((e) => e.ip.startsWith('127.78.')).length;
    const liveDown = list.entries.filter((e) => e.ip.startsWith('127.79.')).length;
    let droppedAfter = 0;
    for (let i = 0; i < Math.min(BANS, 20); i++) if (await refused(b.port, `127.78.${Math.floor(i / 250)}.${(i % 250) + 1}`)) droppedAfter++;

    const rows = [
      ['bans made on A', BANS], ['in force on B (dropped at accept)', times.length], ['missed (not in force within 3 s)', missed],
      ['ban → drop on B, p50 ms', fmt(q(0.5), 1)], ['p99 ms', fmt(p99, 1)], ['max ms', fmt(times[times.length - 1], 1)],
      ['B killed (-9) and restarted: up in ms', fmt(upMs, 0)], ['live bans B lists after the restart', `${live} / ${BANS}`], ['bans made on A while B was down, listed on B', `${liveDown} / ${WHILE_DOWN}`],
      ['of the first 20, dropped at accept on B after the restart', `${droppedAfter} / ${Math.min(BANS, 20)}`],
    ];
    const target = `ban-to-drop on the other node p99 ≤ 1 s over ${BANS} bans: ${verdict}; restarted node rejoins with every live ban: ${live === BANS && liveDown === WHILE_DOWN && droppedAfter === Math.min(BANS, 20) ? 'met' : 'NOT MET'}`;
    const text = `${table(['', ''], rows)}\n\n${target}\n\nMeasured with a poll of a fresh connection from the banned address every few ms (each poll adds up to its own round trip).`;
    console.log(text);
    writeResult('redis-bans.md', `# Bans across two nodes on one Redis\n\n${machineLine()}\n\n\`node bench/redis-bans.ts --bans ${BANS}\` (${((Date.now() - t0) / 1000).toFixed(0)} s)\n\n${text}\n`);
  } finally {
    await stopAll();
    await redis.close();
  }
}

main().catch(async (e) => { console.error(e); await stopAll(); process.exit(1); });
