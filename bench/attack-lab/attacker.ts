// Runs one attack scenario as its own process and reports per second what it
// sent and what came back (so a weak generator is visible).
// Child with IPC: node bench/attack-lab/attacker.ts '{"scenario","params","port","t0","startAt","endAt"}'
import { SCENARIOS, type AttackContext, type Scenario } from './scenarios.ts';
import { emptyAttackSecond, sleep, type AttackReport } from './common.ts';

const o = JSON.parse(process.argv[2]) as { scenario: keyof typeof SCENARIOS; params: Record<string, number>; port: number; t0: number; startAt: number; endAt: number };
const sc = SCENARIOS[o.scenario] as unknown as Scenario<Record<string, number>>;
const ctx: AttackContext = { port: o.port, t0: o.t0, endAt: o.endAt, seconds: [], blocked: new Set(), sources: new Set(), note: [] };

// A proxy started mid-attack: from now on the attack goes to it.
process.on('message', (m: { cmd: string; port?: number }) => { if (m.cmd === 'port' && m.port) ctx.port = m.port; });

async function main() {
  await sleep(Math.max(0, o.startAt - Date.now()));
  // A hard stop in case a scenario overruns: the attack never outlives its window by more than 3 s.
  setTimeout(() => { console.error(`attacker ${o.scenario}: overran its window, exiting`); finish(); }, o.endAt - Date.now() + 3000).unref();
  await sc.run(ctx, { ...sc.defaults, ...o.params });
  finish();
}
let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  const report: AttackReport = { seconds: ctx.seconds.map((s) => s ?? emptyAttackSecond()), sources: ctx.sources.size, blockedSources: [...ctx.blocked], note: ctx.note.join('; ') };
  process.send!({ event: 'report', report }, () => process.exit(0));
}
main().catch((e) => { console.error(`attacker ${o.scenario} failed:`, e); process.exit(1); });
