// Memory and pauses of the blacklist with many bans, side by side in one run:
//   scrubber        the Blacklist as it is, no cap reached: bans in a Map, the listeners' BlockList looks them up
//   ..default cap   the same with filter.maxBans at its default (the bans ending soonest lifted past it)
//   native mirror   the same bans also mirrored into Node's net.BlockList (what the blacklist did before): a native
//                   entry per ban, and a rebuild of the whole list once as many were lifted as are live
// Each variant runs in its own process (a fresh heap): N bans are added (IPv4, or IPv6 /64s), then all expire in
// 100 steps, a second apart, as the filter's tick finds them; printed: bytes per ban (heap+external, and RSS), µs per add, the
// longest expiry step (a pause of the process that accepts every connection), and µs per accept-time check.
// usage: node --expose-gc bench/ban-memory.ts [--bans 1000000]
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { Blacklist, type BanEntry } from '../src/decisions/blacklist.ts';
import { banPolicy } from '../src/decisions/decisions.ts';
import { loadConfigObject } from '../src/config/load.ts';

const arg = (k: string) => { const i = process.argv.indexOf(k); return i > 0 ? process.argv[i + 1] : undefined; };
const N = Number(arg('--bans') ?? 1_000_000);
const key = (i: number, v6: boolean) => v6 ? `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64` : `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

interface Row { variant: string; family: string; bans: number; held: number; heapB: number; rssB: number; addUs: number; worstStepMs: number; checkUs: number }

/** The former blacklist's native side: every ban in a net.BlockList, rebuilt once lifted entries reach the live ones. */
class NativeMirror {
  bans = new Map<string, BanEntry>();
  list = new net.BlockList();
  lifted = 0;
  add(e: BanEntry): void { this.bans.set(e.ip, e); this.put(this.list, e.ip); }
  put(l: net.BlockList, ip: string): void { if (ip.endsWith('/64')) l.addSubnet(ip.slice(0, -3), 64, 'ipv6'); else l.addAddress(ip, 'ipv4'); }
  expire(now: number): void {
    let n = 0;
    for (const [k, e] of this.bans) if (e.expiresAt <= now) { this.bans.delete(k); n++; }
    this.lifted += n;
    if (this.lifted >= Math.max(256, this.bans.size)) { this.lifted = 0; const l = new net.BlockList(); for (const ip of this.bans.keys()) this.put(l, ip); this.list = l; }
  }
  check(a: string, t: 'ipv4' | 'ipv6'): boolean { return this.list.check(a, t); }
}

function child(variant: string, v6: boolean): Row {
  const maxBans = variant === 'scrubber, default cap' ? banPolicy(defaults().filter).maxBans ?? Infinity : Infinity;
  globalThis.gc!();
  const m0 = process.memoryUsage();
  const b = variant.startsWith('scrubber') ? new Blacklist(maxBans) : new NativeMirror();
  let t = performance.now();
  for (let i = 0; i < N; i++) {
    b.add({ ip: key(i, v6), reason: 'rate 500/10s', rule: 'flood', since: 0, expiresAt: 1000 * (1 + (i % 100)) });
    if (b instanceof Blacklist) b.trim();
  }
  const addUs = (performance.now() - t) * 1000 / N;
  globalThis.gc!();
  const m1 = process.memoryUsage();
  const held = b instanceof Blacklist ? b.size : b.bans.size;
  const probe = (k: number) => v6 ? `2001:db9::${k.toString(16)}` : `192.168.${(k >> 8) & 255}.${k & 255}`;
  const fam = v6 ? 'ipv6' : 'ipv4';
  const check = b instanceof Blacklist ? (a: string) => b.blockList.check(a, fam) : (a: string) => b.check(a, fam);
  t = performance.now();
  for (let k = 0; k < 20_000; k++) check(probe(k));
  const checkUs = (performance.now() - t) * 1000 / 20_000;
  let worst = 0;
  for (let s = 1; s <= 100; s++) { t = performance.now(); b.expire(s * 1000); worst = Math.max(worst, performance.now() - t); }
  if ((b instanceof Blacklist ? b.size : b.bans.size) !== 0) throw new Error(`${variant}: bans left after every end`);
  return { variant, family: v6 ? 'IPv6 /64' : 'IPv4', bans: N, held, heapB: (m1.heapUsed + m1.external - m0.heapUsed - m0.external) / held, rssB: (m1.rss - m0.rss) / held, addUs, worstStepMs: worst, checkUs };
}

function defaults() {
  const r = loadConfigObject({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] }, {});
  if (!r.ok) throw new Error(r.problems.join('; '));
  return r.config;
}

if (process.argv[2] === '--child') {
  process.stdout.write(JSON.stringify(child(process.argv[3], process.argv[4] === 'v6')));
} else {
  const rows: Row[] = [];
  for (const v6 of [false, true]) for (const variant of ['scrubber', 'scrubber, default cap', 'native mirror']) {
    const r = spawnSync(process.execPath, ['--expose-gc', import.meta.filename, '--child', variant, v6 ? 'v6' : 'v4', '--bans', String(N)], { encoding: 'utf8', maxBuffer: 1 << 20 });
    if (r.status !== 0) throw new Error(`${variant}: ${r.stderr}`);
    rows.push(JSON.parse(r.stdout) as Row);
  }
  const head = '| variant | bans | added | held | heap+external B/ban held | RSS B/ban held | µs per add | longest expiry step ms | µs per accept check |';
  const lines = [head, '|---|---|---|---|---|---|---|---|---|', ...rows.map((r) =>
    `| ${r.variant} | ${r.family} | ${r.bans} | ${r.held} | ${r.heapB.toFixed(0)} | ${r.rssB.toFixed(0)} | ${r.addUs.toFixed(2)} | ${r.worstStepMs.toFixed(0)} | ${r.checkUs.toFixed(2)} |`)];
  const md = `# Blacklist memory and pauses\n\nNode ${process.version}, ${new Date().toISOString()}. Command: \`node --expose-gc bench/ban-memory.ts --bans ${N}\`.\n` +
    `"held": bans in force after the adds ("default cap": filter.maxBans at its default; the others hold every ban); per-ban figures count the ban's key, entry and lookup.\n\n${lines.join('\n')}\n`;
  console.log(md);
  fs.writeFileSync(path.join(import.meta.dirname, 'results', 'ban-memory.md'), md);
}
