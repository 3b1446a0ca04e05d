// SIGHUP from the first moment: Node's default for it is to exit (129), so a
// reload asked while the proxy still loads or starts (a config tool signalling
// right after a service start; a start waiting for Redis) killed it. The
// launcher (bin/scrubber.js) imports this before anything else; a signal that
// comes before the proxy has started is held, and main.ts applies it once.

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
