// SIGHUP from the first moment: Node's default for it is to exit (129), so a
// reload asked while the proxy still loads or starts (a config tool signalling
// right after a service start; a start waiting for Redis) killed it. The
// launcher (bin/scrubber.js) imports this before anything else; a signal that
// comes before the proxy has started is held, and main.ts applies it once.

let target: { reload(): unknown } | null = null;
let held = false;

process.on('SIGHUP', () => {
  if (target) target.reload();
  else held = true;
});

/** From now on SIGHUP reloads `app`. Whether one came during the start (the caller then reloads once, and says so). */
export function reloadOnSighup(app: { reload(): unknown }): boolean {
  target = app;
  const during = held;
  held = false;
  return during;
}
