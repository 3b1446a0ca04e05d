// `npm run attack-lab [scenario…] [-- --smoke] [-- --targets none,scrubber-default,scrubber-tuned,nginx,haproxy --warmup S --attack S --cooldown S --users N --workers N]`
// Each scenario runs legit-only warm-up, attack, cool-down against every
// target in turn (no protection, Scrubber in its default config, Scrubber
// tuned — told the origin's capacity —, nginx, HAProxy), with the same
// origin, the same legitimate population and the same attack generator.
// `--target` is the same as `--targets`; `scrubber` means both Scrubber configs.
// A scenario may start the target mid-attack (param lateStartS: until then
// the traffic goes to the unprotected origin, as when a site owner connects
// the proxy while under attack), skip the warm-up, or add legitimate groups
// (people behind one NAT, cookie-less API clients, a flash crowd), each
// reported on its own.
// Results: a table per scenario on the terminal, bench/results/attack-lab.md,
// an SVG chart and the raw series (JSON) per scenario under bench/results/attack-lab/.
// Exit code: 0 when the harness ran (targets met or not), non-zero when it failed.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startNode, startScrubber, stopAll, freePort, ROOT, tools, type Child } from '../lib/proc.ts';
import { startNginx, startHaproxy, DDOS_LIMITS } from '../lib/thirdparty.ts';
import { table, textTable, writeResult, fmt, pct, machineLine, RESULTS_DIR } from '../lib/report.ts';
import { chart } from '../lib/svg.ts';
import { SCENARIOS, type ScenarioName, type Scenario } from './scenarios.ts';
import { ORIGIN_CAPACITY, ORIGIN_MAXCONN, classify, SITE_HOST, type OriginReport, type LegitReport, type AttackReport } from './common.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    smoke: { type: 'boolean', default: false },
    targets: { type: 'string' }, target: { type: 'string' }, warmup: { type: 'string' }, attack: { type: 'string' }, cooldown: { type: 'string' }, users: { type: 'string' }, workers: { type: 'string' },
  },
});
const smoke = args.smoke!;
const W = Number(args.warmup ?? (smoke ? 2 : 4));
const A = Number(args.attack ?? (smoke ? 5 : 15));
const C = Number(args.cooldown ?? (smoke ? 1 : 3));
const USERS = Number(args.users ?? 120);
// Scrubber's worker processes (config key `workers`). 1 by default: every target gets one core (nginx
// worker_processes 1, HAProxy nbthread 1). `--workers 2` runs the primary and two workers on that core, to check
// that the protection holds when sources are sharded over workers (the default on a machine with more cores).
const WORKERS = Number(args.workers ?? 1);
/** Where the results go: a run with workers has its own report, next to the one-process one. */
const RESULT_NAME = WORKERS > 1 ? `attack-lab-workers${WORKERS}` : 'attack-lab';
const ALL_TARGETS = ['none', 'scrubber-default', 'scrubber-tuned', 'nginx', 'haproxy'] as const;
type TargetName = (typeof ALL_TARGETS)[number];
const targetArg = args.targets ?? args.target;
const targetNames = (targetArg ? [...new Set(targetArg.split(',').flatMap((t) => (t === 'scrubber' ? ['scrubber-default', 'scrubber-tuned'] : [t])))] : [...ALL_TARGETS]) as TargetName[];
for (const t of targetNames) if (!ALL_TARGETS.includes(t)) throw new Error(`unknown target ${t} (known: ${ALL_TARGETS.join(', ')}, scrubber = both Scrubber configs)`);
const isScrubber = (t: string) => t.startsWith('scrubber');
const scenarioNames = (positionals.length ? positionals : smoke ? ['flood', 'hulk'] : Object.keys(SCENARIOS)) as ScenarioName[];
for (const s of scenarioNames) if (!(s in SCENARIOS)) { console.error(`unknown scenario ${s} (known: ${Object.keys(SCENARIOS).join(', ')})`); process.exit(2); }
// The target gets core 0 to itself; origin and generators share core 1.
const CPU = { target: 0, others: 1 };

interface Target { name: TargetName; label: string; port: number; stop(): Promise<void>; bans?(): Promise<string[] | null>; skipped?: string }

async function startTarget(name: TargetName, originPort: number): Promise<Target> {
  if (name === 'none') return { name, label: 'no protection', port: originPort, stop: async () => {} };
  if (isScrubber(name)) {
    // default: the config a new user writes (upstream and name, nothing else); tuned: told the origin's capacity.
    const s = await startScrubber({ name, upstream: `127.0.0.1:${originPort}`, domain: SITE_HOST, mode: 'auto', cpu: CPU.target, extra: { workers: WORKERS }, domainExtra: name === 'scrubber-tuned' ? { maxInflight: ORIGIN_MAXCONN } : {} });
    return {
      name, label: name, port: s.port,
      stop: async () => {
        await s.child.stop(5000);
        // Why attack mode started (or that it did not): the proxy's own words, on the terminal.
        const log = fs.readFileSync(path.join(s.dir, 'scrubber.log'), 'utf8').split('\n').filter((l) => l.includes('under attack'));
        console.log(`   ${name}: ${log.length ? log.slice(0, 3).map((l) => { try { const j = JSON.parse(l); return `attack mode at ${new Date(j.time).toISOString().slice(11, 19)}: ${j.reason}`; } catch { return l; } }).join('; ') : 'attack mode never started'}`);
        fs.rmSync(s.dir, { recursive: true, force: true });
      },
      bans: async () => {
        const r = await fetch(`${s.adminUrl}/api/blacklist`).catch(() => null);
        if (!r || r.status !== 200) return null;
        const j = (await r.json()) as { entries?: { ip: string }[] };
        return (j.entries ?? []).map((e) => e.ip);
      },
    };
  }
  const r = name === 'nginx' ? await startNginx(originPort, 'ddos', CPU.target) : await startHaproxy(originPort, 'ddos', CPU.target, ORIGIN_MAXCONN);
  if ('skipped' in r) return { name, label: name, port: 0, stop: async () => {}, skipped: r.skipped };
  return { name, label: name, port: r.port, stop: async () => { await r.child.stop(); fs.rmSync(r.dir, { recursive: true, force: true }); } };
}

function childReport<T>(c: Child, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    let report: T | null = null;
    c.proc.on('message', (m: { event: string; report: T }) => { if (m.event === 'report') report = m.report; });
    c.exited.then((code) => (report ? resolve(report) : reject(new Error(`${what} exited with ${code} without a report`))));
  });
}

let origin: Child;
function originCall<T>(cmd: Record<string, unknown>, event: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`origin did not answer ${cmd.cmd}`)), 5000);
    const on = (m: { event: string; report?: T }) => { if (m.event === event) { clearTimeout(t); origin.proc.off('message', on); resolve(m.report as T); } };
    origin.proc.on('message', on);
    origin.proc.send(cmd);
  });
}

interface RunResult {
  target: string; skipped?: string;
  /** Legit success per group during the attack; users challenged more than once (browser-like groups). */
  groups: Record<string, number | null>; challengedMore: number | null; challengedUsers: number | null;
  /** Second (since T0) the target took the traffic, for a target started mid-attack. */
  switchAt: number | null;
  legitSuccess: number | null;
  /** Started mid-attack: legit success over the whole seconds after the one the target took the traffic in (what
   *  went to the origin before it cannot be the target's doing). */
  legitSinceSwitch: number | null;
  legitP95: number | null; legitRps: number; legitFailReasons: Record<string, number>;
  falsePositives: number | null; legitSources: number;
  attackBlocked: number | null; attackSources: number; blockedVia: string;
  attackPeak: number; attackEnd: number; endVsPeak: number | null; ttm: number | null; ttmNote: string;
  sentRate: number; attackOkRate: number; attackLimitedRate: number; attackErrorRate: number; attackOpen: number; attackNote: string;
  series: { originAttack: number[]; originTotal: number[]; legitSuccess: (number | null)[] };
}

const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);
const p95 = (xs: number[]) => { if (!xs.length) return null; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)]; };

/** The scenario's warm-up: its own when it sets one (0 = none), else the run's. */
const warmupOf = (sc: Scenario<Record<string, number>>) => (args.warmup == null && sc.warmupS != null ? sc.warmupS : W);
/** The scenario's attack length: its own when it sets one, else the run's (not in a smoke run). */
const attackOf = (sc: Scenario<Record<string, number>>) => (args.attack == null && !smoke && sc.attackS != null ? sc.attackS : A);
const paramsOf = (sc: Scenario<Record<string, number>>) => ({ ...sc.defaults, ...(smoke ? sc.smoke ?? {} : {}) });

async function runOne(scName: ScenarioName, tName: TargetName, originPort: number): Promise<RunResult> {
  const sc = SCENARIOS[scName] as unknown as Scenario<Record<string, number>>;
  const W = warmupOf(sc), A = attackOf(sc);
  const params = paramsOf(sc);
  const late = tName === 'none' ? 0 : params.lateStartS ?? 0;
  let t: Target | null = late ? null : await startTarget(tName, originPort);
  if (t?.skipped) return { target: tName, skipped: t.skipped } as RunResult;
  let switchAt: number | null = null;
  try {
    const T0 = Date.now() + 700;
    await originCall({ cmd: 'reset', t0: T0 }, 'reset');
    const total = W + A + C;
    const port = t ? t.port : originPort;
    const extras: Record<string, number> = {};
    for (const k of ['natUsers', 'apiClients', 'crowdUsers'] as const) { const v = params[k] ?? sc.legit?.[k]; if (v) extras[k] = v; }
    const legit = startNode(path.join(import.meta.dirname, 'legit.ts'), [JSON.stringify({ port, t0: T0, durationS: total, users: USERS, ...extras, crowdFromS: W, crowdOverS: 3 })], { name: 'legit', cpu: CPU.others, ipc: true, stdout: 'inherit' });
    const attacker = startNode(path.join(import.meta.dirname, 'attacker.ts'), [JSON.stringify({ scenario: scName, params, port, t0: T0, startAt: T0 + W * 1000, endAt: T0 + (W + A) * 1000 })], { name: `attacker ${scName}`, cpu: CPU.others, ipc: true, stdout: 'inherit' });
    const watchdog = setTimeout(() => { console.error(`  ${scName}/${tName}: generators overran, stopping them`); legit.stop(); attacker.stop(); }, (total + 15) * 1000 + 700);
    const reports = Promise.all([childReport<LegitReport>(legit, 'legit population'), childReport<AttackReport>(attacker, `attacker ${scName}`)]).finally(() => clearTimeout(watchdog));
    if (late) {
      // The site owner connects the proxy while under attack: start it, then move every client to it.
      await new Promise((r) => setTimeout(r, Math.max(0, T0 + (W + late) * 1000 - Date.now())));
      t = await startTarget(tName, originPort);
      if (!t.skipped) {
        for (const c of [legit, attacker]) if (c.proc.connected) c.proc.send({ cmd: 'port', port: t.port });
        switchAt = Math.floor((Date.now() - T0) / 1000);
      }
    }
    const [lr, ar] = await reports;
    if (!t || t.skipped) return { target: tName, skipped: t?.skipped ?? 'not started' } as RunResult;
    const bans = t.bans ? await t.bans() : null;
    const or = await originCall<OriginReport>({ cmd: 'report' }, 'report');
    return metrics(tName, t, lr, ar, or, bans, W, A, switchAt);
  } finally {
    await t?.stop();
  }
}

function metrics(tName: TargetName, t: Target, lr: LegitReport, ar: AttackReport, or: OriginReport, bans: string[] | null, W: number, A: number, switchAt: number | null): RunResult {
  const total = W + A + C;
  const win = range(W, W + A);
  const ls = (i: number) => lr.seconds[i];
  const lOk = win.reduce((n, i) => n + (ls(i)?.ok ?? 0), 0), lTot = win.reduce((n, i) => n + (ls(i)?.total ?? 0), 0);
  const fails: Record<string, number> = {};
  for (const i of win) for (const [k, v] of Object.entries(ls(i)?.failReasons ?? {})) fails[k] = (fails[k] ?? 0) + v;
  const originAttack = range(0, total).map((i) => or.seconds[i]?.arrivals.attack ?? 0);
  const originTotal = range(0, total).map((i) => { const a = or.seconds[i]?.arrivals; return a ? a.legit + a.attack + a.other : 0; });
  const peak = Math.max(0, ...win.map((i) => originAttack[i]));
  const last3 = range(Math.max(W, W + A - 3), W + A);
  const end = last3.reduce((n, i) => n + originAttack[i], 0) / Math.max(1, last3.length);
  let ttm: number | null = null, ttmNote = '';
  if (peak === 0) ttmNote = 'n/a (no attack request reached the origin)';
  else {
    // Started mid-attack: counted from the second the target took the traffic.
    const from = switchAt ?? W;
    for (const s of win) if (s >= from && win.filter((i) => i >= s).every((i) => originAttack[i] < 0.1 * peak)) { ttm = s - from; break; }
    if (ttm == null) ttmNote = 'not mitigated';
    else if (switchAt != null) ttmNote = `after the proxy started (at +${switchAt - W} s)`;
  }
  const after = switchAt == null ? [] : win.filter((i) => i > switchAt);
  const aOk = after.reduce((n, i) => n + (ls(i)?.ok ?? 0), 0), aTot = after.reduce((n, i) => n + (ls(i)?.total ?? 0), 0);
  const groups: Record<string, number | null> = {};
  for (const g of Object.keys(lr.groupUsers ?? {})) {
    if (!lr.groupUsers![g as keyof typeof lr.groupUsers]) continue;
    let ok = 0, tot = 0;
    for (const i of win) { const x = ls(i)?.groups?.[g as keyof NonNullable<LegitReport['groupUsers']>]; if (x) { ok += x.ok; tot += x.total; } }
    groups[g] = tot ? ok / tot : null;
  }
  const as = (i: number) => ar.seconds[i];
  const mean = (f: (i: number) => number) => win.reduce((n, i) => n + f(i), 0) / win.length;
  const isLegit = (ip: string) => classify(ip) === 'legit', isAttack = (ip: string) => classify(ip) === 'attack';
  let falsePositives: number | null = null, attackBlocked: number | null = null, blockedVia = '';
  if (isScrubber(tName)) {
    if (bans) { falsePositives = bans.filter(isLegit).length; attackBlocked = bans.filter(isAttack).length; blockedVia = 'blacklist API'; }
    else blockedVia = 'no blacklist API (filter not available)';
  } else if (tName !== 'none') {
    falsePositives = lr.blockedSources.length; attackBlocked = ar.blockedSources.length; blockedVia = '403/429/refused seen by clients';
  }
  return {
    target: t.label, groups, challengedMore: lr.challengedMore ?? null, challengedUsers: lr.challengedOnce != null ? lr.challengedOnce + (lr.challengedMore ?? 0) : null, switchAt,
    legitSuccess: lTot ? lOk / lTot : null, legitSinceSwitch: aTot ? aOk / aTot : null, legitP95: p95(win.flatMap((i) => ls(i)?.lat ?? [])), legitRps: lr.requests / total, legitFailReasons: fails,
    falsePositives, legitSources: lr.users, attackBlocked, attackSources: ar.sources, blockedVia,
    attackPeak: peak, attackEnd: end, endVsPeak: peak ? end / peak : null, ttm, ttmNote,
    sentRate: mean((i) => as(i)?.sent ?? 0), attackOkRate: mean((i) => as(i)?.ok ?? 0), attackLimitedRate: mean((i) => as(i)?.limited ?? 0), attackErrorRate: mean((i) => as(i)?.errors ?? 0),
    attackOpen: Math.max(0, ...win.map((i) => as(i)?.open ?? 0)), attackNote: ar.note,
    series: { originAttack, originTotal, legitSuccess: range(0, total).map((i) => (ls(i)?.total ? ls(i).ok / ls(i).total : null)) },
  };
}

const HEAD = ['target', 'legit success', 'by group', 'challenged (more than once)', 'legit p95 ms', 'legit blocked', 'attack sources blocked', 'attack at origin: peak → end req/s', 'end/peak', 'time to mitigate', 'generator sent/s (ok, 403/429, err)', 'legit req/s'];
function row(r: RunResult): string[] {
  if (r.skipped) return [r.target, `skipped: ${r.skipped}`, '', '', '', '', '', '', '', '', '', ''];
  const groups = Object.entries(r.groups).map(([g, v]) => `${g} ${pct(v)}`).join(', ');
  return [
    r.target, pct(r.legitSuccess) + (r.legitSinceSwitch != null ? ` (${pct(r.legitSinceSwitch)} after the switch)` : ''), groups, r.challengedUsers == null ? '–' : `${r.challengedUsers} (${r.challengedMore})`, fmt(r.legitP95), r.falsePositives == null ? '–' : `${r.falsePositives}/${r.legitSources}`,
    r.attackBlocked == null ? '–' : `${r.attackBlocked}/${r.attackSources}`, `${fmt(r.attackPeak)} → ${fmt(r.attackEnd)}`, pct(r.endVsPeak, 0),
    r.ttm != null ? `${r.ttm} s${r.ttmNote ? ' ' + r.ttmNote : ''}` : r.ttmNote, `${fmt(r.sentRate)} (${fmt(r.attackOkRate)}, ${fmt(r.attackLimitedRate)}, ${fmt(r.attackErrorRate)})${r.attackOpen ? `, ${r.attackOpen} conns open` : ''}`, fmt(r.legitRps),
  ];
}

function verdicts(results: RunResult[]): string[] {
  const ss = results.filter((r) => isScrubber(r.target) && !r.skipped);
  if (!ss.length) return ['scrubber not run'];
  return ss.flatMap((s) => verdictsOf(s, results).map((l) => `${s.target} ${l}`));
}

function verdictsOf(s: RunResult, results: RunResult[]): string[] {
  const v = (ok: boolean | null, what: string) => `${ok == null ? 'unknown' : ok ? 'met' : 'NOT MET'}: ${what}`;
  const out = [
    v(s.legitSuccess == null ? null : s.legitSuccess >= 0.99, `legit success ≥ 99% (${pct(s.legitSuccess)})`),
    ...(s.switchAt != null ? [v(s.legitSinceSwitch == null ? null : s.legitSinceSwitch >= 0.99, `legit success ≥ 99% in the seconds after the one the proxy took the traffic in (${pct(s.legitSinceSwitch)}; the line above counts the seconds the unprotected origin served too)`)] : []),
    ...Object.entries(s.groups).filter(([g]) => g !== 'browser').map(([g, x]) => v(x == null ? null : x >= 0.99, `${g} success ≥ 99% (${pct(x)})`)),
    ...(s.challengedMore != null && s.challengedUsers ? [v(s.challengedMore === 0, `nobody challenged more than once (${s.challengedMore} of ${s.challengedUsers} challenged)`)] : []),
    v(s.falsePositives == null ? null : s.falsePositives === 0, `no legitimate source blocked (${s.falsePositives ?? '?'})`),
    v(s.attackPeak === 0 ? true : s.ttm != null && s.ttm <= (s.switchAt != null ? 10 : 5), `time to mitigate ≤ ${s.switchAt != null ? '10 s after the proxy started' : '5 s'} (${s.ttm != null ? s.ttm + ' s' : s.ttmNote})`),
    v(s.attackPeak === 0 ? true : (s.endVsPeak ?? 1) <= 0.05, `attack at the origin after mitigation ≤ 5% of peak (${pct(s.endVsPeak, 0)})`),
  ];
  for (const o of results.filter((r) => (r.target === 'nginx' || r.target === 'haproxy') && !r.skipped)) {
    const better = (s.legitSuccess ?? 0) >= (o.legitSuccess ?? 0) && s.attackEnd <= o.attackEnd;
    out.push(v(better, `better than ${o.target} (legit ${pct(s.legitSuccess)} vs ${pct(o.legitSuccess)}, attack at origin at end ${fmt(s.attackEnd)} vs ${fmt(o.attackEnd)} req/s)`));
  }
  return out;
}

async function main() {
  const started = Date.now();
  console.log(`attack lab${smoke ? ' (smoke)' : ''}: scenarios ${scenarioNames.join(', ')}; targets ${targetNames.join(', ')}; ${W} s warm-up, ${A} s attack, ${C} s cool-down; ${USERS} legitimate users`);
  if (!tools.taskset) console.log('note: taskset not found, processes are not pinned to cores');
  const originPort = await freePort();
  origin = startNode(path.join(import.meta.dirname, 'origin.ts'), [String(originPort)], { name: 'lab origin', cpu: CPU.others, ipc: true });
  await new Promise<void>((resolve, reject) => {
    origin.proc.once('message', () => resolve());
    origin.exited.then((c) => reject(new Error(`lab origin exited with ${c}`)));
  });
  const chartDir = path.join(RESULTS_DIR, RESULT_NAME);
  fs.mkdirSync(chartDir, { recursive: true });
  const sections: string[] = [];
  const summary: Record<string, Record<string, string>> = {};
  for (const scName of scenarioNames) {
    const sc = SCENARIOS[scName] as unknown as Scenario<Record<string, number>>;
    const params = paramsOf(sc);
    const W = warmupOf(sc), A = attackOf(sc);
    console.log(`\n## ${scName}: ${sc.describe}\n   params ${JSON.stringify(params)}`);
    const results: RunResult[] = [];
    for (const tName of targetNames) {
      const t1 = Date.now();
      const r = await runOne(scName, tName, originPort);
      results.push(r);
      console.log(r.skipped ? `   ${tName}: skipped — ${r.skipped}` : `   ${r.target}: legit ${pct(r.legitSuccess)}, attack at origin ${fmt(r.attackPeak)} → ${fmt(r.attackEnd)} req/s, ${((Date.now() - t1) / 1000).toFixed(0)} s` +
        (Object.keys(r.legitFailReasons).length ? `; legit failures: ${JSON.stringify(r.legitFailReasons)}` : ''));
    }
    const ran = results.filter((r) => !r.skipped);
    console.log(textTable(HEAD, results.map(row)));
    const v = verdicts(results);
    console.log(v.map((l) => `   ${l}`).join('\n'));
    const svg = chart(`${scName}: ${sc.describe}`, [
      { title: 'Origin load: requests arriving per second (legit + attack)', yLabel: 'req/s', series: ran.map((r) => ({ name: r.target, values: r.series.originTotal })) },
      { title: 'Attack requests reaching the origin per second', yLabel: 'req/s', series: ran.map((r) => ({ name: r.target, values: r.series.originAttack })) },
      { title: 'Legitimate requests succeeding (2xx/3xx within 3 s), by second of start', yLabel: 'success', yMax: 1, percent: true, series: ran.map((r) => ({ name: r.target, values: r.series.legitSuccess })) },
    ], { from: W, to: W + A, label: 'attack' });
    fs.writeFileSync(path.join(chartDir, `${scName}.svg`), svg);
    fs.writeFileSync(path.join(chartDir, `${scName}.json`), JSON.stringify({ scenario: scName, params, W, A, C, results }, null, 1));
    for (const r of ran) (summary[scName] ??= {})[r.target] = `${pct(r.legitSuccess, 0)}${r.legitSinceSwitch != null ? ` (${pct(r.legitSinceSwitch, 0)} after the switch)` : ''} / ${r.ttm != null ? r.ttm + ' s' : r.attackPeak === 0 ? 'n/a' : '∞'}`;
    const failLines = ran.filter((r) => Object.keys(r.legitFailReasons).length).map((r) => `- ${r.target}: legit failures during the attack: ${Object.entries(r.legitFailReasons).map(([k, n]) => `${k} ×${n}`).join(', ')}`);
    sections.push(`## ${scName}\n\n${sc.describe}. Parameters: \`${JSON.stringify(params)}\`${W !== Number(args.warmup ?? (smoke ? 2 : 4)) ? `; warm-up ${W} s` : ''}${A !== Number(args.attack ?? (smoke ? 5 : 15)) ? `; attack ${A} s` : ''}${sc.legit ? `; legitimate extras ${JSON.stringify(sc.legit)}` : ''}.\n\n${table(HEAD, results.map(row))}\n\n${failLines.join('\n')}\n\nScrubber against the targets of the issue:\n\n${v.map((l) => `- ${l}`).join('\n')}\n\n![${scName}](${RESULT_NAME}/${scName}.svg)\n`);
  }
  await stopAll();
  const targetsRan = [...new Set(Object.values(summary).flatMap((o) => Object.keys(o)))];
  const md = `# Attack lab\n\n${machineLine()}${smoke ? ' — **smoke run (short phases, not a measurement)**' : ''}\n\n` +
    `Command: \`npm run attack-lab${smoke ? ' -- --smoke' : ''}${positionals.length ? ' ' + positionals.join(' ') : ''}${WORKERS > 1 ? ` -- --workers ${WORKERS}` : ''}\`. Phases: ${W} s warm-up (legit only), ${A} s attack, ${C} s cool-down; ${USERS} legitimate users on 127.1.x.y. ` +
    `Targets run one after another against the same origin; the target is pinned to core ${CPU.target}, origin and generators to core ${CPU.others}.` +
    (WORKERS > 1 ? ` Scrubber runs ${WORKERS} worker processes and its primary (\`--workers ${WORKERS}\`, config key \`workers\`), all on that core: sources are sharded over the workers as on a machine whose default is one worker per core.` : '') +
    `\n\n` +
    `Origin capacity: ${ORIGIN_CAPACITY.slots} worker slots, queue ${ORIGIN_CAPACITY.queue}, 503 after ${ORIGIN_CAPACITY.maxWaitMs} ms of waiting, at most ${ORIGIN_CAPACITY.maxConnections} connections; costs (ms) ${JSON.stringify(ORIGIN_CAPACITY.costMs)}. ` +
    `nginx and HAProxy use their documented anti-DDoS settings (bench/lib/thirdparty.ts): ${DDOS_LIMITS.reqPerSec} req/s per source (burst ${DDOS_LIMITS.burst}), ${DDOS_LIMITS.connPerSource} connections per source, ${DDOS_LIMITS.headerTimeoutS} s header/body timeouts. ` +
    `*scrubber-default* runs the config a new user writes (domain and upstream, \`filter.mode: auto\`, no \`maxInflight\`): it must find the origin's limit by itself. ` +
    `*scrubber-tuned* and HAProxy are told what the origin takes at once (Scrubber \`maxInflight\`, HAProxy server \`maxconn\`: ${ORIGIN_MAXCONN}) and queue the rest in front of it; open-source nginx has no upstream queue (\`max_conns\` alone answers 502 past it), so it runs without. ` +
    `Scenarios may set their own warm-up (0: the attack starts with the users) or start each target mid-attack (\`lateStartS\`: the traffic goes to the unprotected origin until then; time to mitigate is then counted from the switch). ` +
    `*by group*: legit success of the browser users, the people behind one NAT (\`nat\`), the cookie-less API clients (\`api\`) and the flash crowd (\`crowd\`); *challenged*: browser-like users that got the cookie challenge, and in brackets those that got it more than once.\n\n` +
    `How to read: *legit success* counts legitimate requests started during the attack that ended 2xx/3xx within 3 s (redirects followed). *legit blocked*: legitimate sources on Scrubber's blacklist, or (nginx/HAProxy) that got 403/429 or refused connections. ` +
    `*attack at origin*: attack requests arriving at the origin per second, peak during the attack → mean of its last 3 s. *time to mitigate*: from attack start until attack traffic at the origin stays below 10% of its peak. ` +
    `*generator*: what the attack generator sent per second, and what came back (2xx/3xx, 403/429, errors), so that a weak generator is visible.\n\n` +
    `## Summary: legit success during the attack / time to mitigate\n\n${table(['scenario', ...targetsRan], Object.entries(summary).map(([s, o]) => [s, ...targetsRan.map((t) => o[t] ?? '–')]))}\n\n${sections.join('\n')}`;
  const file = writeResult(`${RESULT_NAME}.md`, md);
  console.log(`\nwritten ${file} and ${path.relative(ROOT, chartDir)}/*.svg in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

main().then(() => process.exit(0), async (e) => {
  console.error('attack lab harness failed:', e);
  await stopAll();
  process.exit(1);
});
