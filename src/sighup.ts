// Signals from the first moment. Node's default for SIGHUP is to exit (129),
// so a reload asked while the proxy still loads or starts (a config tool
// signalling right after a service start; a start waiting for Redis) killed
// it; SIGTERM and SIGINT in that window ended it by the signal, not the
// exit 0 of a stop (and Node as PID 1 in a container ignores SIGTERM with no
// handler). The launcher (bin/scrubber.js) imports this before anything else;
// a signal that comes before the proxy has started is held, and main.ts
// applies it once it has: a reload, or the stop (drain, save, exit 0). A
// second SIGTERM/SIGINT during the start ends it at once, exit 0: nothing was
// served yet.

let target: { reload(): unknown } | null = null;
let held = false;

// A reload answers a config it cannot apply with a refusal, logged; should one still throw, the signal handler is
// where it would become an uncaught exception and end the proxy: a reload asked for must never stop it.
process.on('SIGHUP', () => {
  if (!target) { held = true; return; }
  try { target.reload(); } catch (e) { process.stderr.write(`scrubber: SIGHUP: reload failed, the running config stays: ${(e as Error).message}\n`); }
});

/** From now on SIGHUP reloads `app`. Whether one came during the start (the caller then reloads once, and says so). */
export function reloadOnSighup(app: { reload(): unknown }): boolean {
  target = app;
  const during = held;
  held = false;
  return during;
}

let stopTarget: ((signal: string) => void) | null = null;
let stopHeld: string | null = null;
const onStop = (signal: string) => {
  if (stopTarget) { stopTarget(signal); return; }
  if (stopHeld !== null) process.exit(0);
  stopHeld = signal;
};
process.on('SIGTERM', () => onStop('SIGTERM'));
process.on('SIGINT', () => onStop('SIGINT'));

/** From now on SIGTERM/SIGINT call `stop`; one that came during the start is applied now. */
export function stopOnSignals(stop: (signal: string) => void): void {
  stopTarget = stop;
  if (stopHeld !== null) { const s = stopHeld; stopHeld = null; stop(s); }
}
