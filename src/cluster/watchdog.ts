// Which workers have stopped answering: a worker reports to the primary every
// second (cluster/protocol.ts, 'report'), from a timer of its own event loop,
// so one that has been silent for much longer has a loop that no longer turns
// (a bug that loops, a pathological input, a process held by SIGSTOP). Its
// sources wait behind it for ever, since each source goes to one worker only:
// the pool kills it and starts a new one under the same index. Pure.

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
