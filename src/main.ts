// The CLI: `scrubber [--config FILE]`, `scrubber check --config FILE`,
// `scrubber keys`. Signals: SIGHUP reloads, SIGTERM/SIGINT drain and exit 0.
import './app/v8-flags.ts';
import { reloadOnSighup, stopOnSignals } from './sighup.ts';
import { parseArgs } from 'node:util';
import { describeKeys, loadConfigFile } from './config/load.ts';
import { configWarnings } from './config/advice.ts';
import { startApp } from './app/app.ts';
import { startPrimary } from './app/primary.ts';
import { createLogger } from './log.ts';
import { StoreError, storeError } from './store/db.ts';

const USAGE = `usage:
  scrubber [--config FILE]          run the proxy (default config/default.json)
  scrubber check --config FILE      validate a config: exit 0, or exit 2 with one line per problem
  scrubber keys [--markdown]        list every config key with its default and environment variable`;

/** One line for an operator: SQLite errors name the store file (they come from several modules, none of which knows it). */
function startFailure(e: unknown, stateDir: string): string {
  if (e instanceof StoreError) return e.message;
  if (String((e as NodeJS.ErrnoException).code ?? '').startsWith('ERR_SQLITE')) return storeError(stateDir, e).message;
  return `scrubber: cannot start: ${(e as Error).message}`;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' }, markdown: { type: 'boolean' } } });
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) { console.log(USAGE); return 0; }
  const command = positionals[0] ?? 'run';
  const file = values.config ?? 'config/default.json';

  if (command === 'keys') {
    if (values.markdown) {
      console.log('| key | default | environment | meaning |\n|---|---|---|---|');
      for (const k of describeKeys()) console.log(`| \`${k.key}\` | \`${JSON.stringify(k.default)}\` | \`${k.env}\` | ${k.doc.replaceAll('|', '\\|')} |`);
    } else for (const k of describeKeys()) console.log(`${k.key}\t${JSON.stringify(k.default)}\t${k.env}\t${k.doc}`);
    return 0;
  }
  if (command !== 'run' && command !== 'check') { console.error(`unknown command ${command}\n${USAGE}`); return 2; }

  const loaded = loadConfigFile(file);
  if (command === 'check') {
    if (loaded.ok) {
      console.log(`${file}: ok`);
      for (const w of configWarnings(loaded.config)) console.log(`warning: ${w}`);
      return 0;
    }
    for (const p of loaded.problems) console.log(p);
    return 2;
  }
  if (!loaded.ok) {
    for (const p of loaded.problems) console.error(p);
    return 2;
  }
  const log = createLogger(loaded.config.log.level);
  let app: { reload(): unknown; close(): Promise<boolean | void> };
  // Several workers: this process accepts and hands connections to worker processes, each source always to the same one.
  try { app = loaded.config.workers > 1 ? await startPrimary(loaded.config, { configFile: file, log }) : await startApp(loaded.config, { configFile: file, log }); } catch (e) {
    console.error(startFailure(e, loaded.config.state.dir));
    // Whatever the failed start had already opened (listeners, timers) must not keep the process alive.
    process.exit(1);
  }
  if (reloadOnSighup(app)) {
    log.info({ signal: 'SIGHUP' }, 'SIGHUP during the start: reloading now');
    app.reload();
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    // Exit 1 when the store refused the last writes: a supervisor must not take a stop that lost state for a clean one.
    app.close().then((saved) => process.exit(saved === false ? 1 : 0), (e) => { log.error({ err: e }, 'error while stopping'); process.exit(1); });
  };
  stopOnSignals(stop);
  return -1;
}

main(process.argv.slice(2)).then((code) => { if (code >= 0) process.exitCode = code; }, (e) => {
  console.error(`scrubber: ${(e as Error).message}`);
  process.exit(1);
});
