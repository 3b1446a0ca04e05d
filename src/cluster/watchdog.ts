// Which workers have stopped answering: a worker reports to the primary every
// second (cluster/protocol.ts, 'report'), from a timer of its own event loop,
// so one that has been silent for much longer has a loop that no longer turns
// (a bug that loops, a pathological input, a process held by SIGSTOP). Its
// sources wait behind it for ever, since each source goes to one worker only:
// the pool kills it and starts a new one under the same index. Pure; with
// the pace at which an index is forked again.

export interface Heard {
  index: number;
  /** Ready for connections: a worker still starting has its own deadline (it fails or it says ready). */
  ready: boolean;
  /** When anything last came from it (ms, the caller's clock). */
  heardAt: number;
}

/**
 * The indexes of ready workers silent for longer than limitMs (0: the watchdog is off). `lookedAt` is when the
 * caller last looked and `everyMs` how often it means to: a look much later than that says the caller's own loop
 * stalled, and the workers' reports of that time are still unread in its channel. None is judged then (the next
 * look, after the reports are read, will).
 */
export function silentWorkers(workers: readonly (Heard | null)[], now: number, limitMs: number, lookedAt = now, everyMs = Infinity): number[] {
  if (limitMs <= 0 || now - lookedAt > 2 * everyMs) return [];
  const out: number[] = [];
  for (const w of workers) if (w && w.ready && now - w.heardAt > limitMs) out.push(w.index);
  return out;
}

/** The pause before the next fork stops growing here, however many quick deaths in a row. */
export const MAX_BACKOFF_MS = 5000;

/** A worker not ready this long after its fork is killed (and replaced after the back-off): one stuck starting would
 *  otherwise hold the proxy's start, or its sources' home, for ever (the watchdog judges ready workers only). */
export const START_DEADLINE_MS = 30_000;

/** A worker that lived this long died on its own: the next one starts after the shortest pause again. */
export const QUICK_DEATH_MS = 10_000;

/** The pause before forking an index again after `quick` quick deaths (or failed forks) in a row: 0.1 s doubling up
 *  to MAX_BACKOFF_MS, so an index that cannot start does not spin the machine. */
export const backoffMs = (quick: number): number => Math.min(100 * 2 ** Math.min(Math.max(quick - 1, 0), 6), MAX_BACKOFF_MS);
