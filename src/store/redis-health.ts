// Whether what this node decides reaches the other nodes, beyond being connected: Redis can answer every PING and
// refuse every write (a replica after a failover answers READONLY; one out of memory under noeviction, OOM), or
// writes can hang back in the queue. Connected is not enough for /healthz to say "ok" then: no ban of this node
// reaches the others. Also the ping with a deadline both Redis connections of a node use for their heartbeat.
import type { Redis } from 'ioredis';
import type { BusLogger } from './redis-keys.ts';

/** Decisions waiting this long, Redis connected and no write going through, make the node degraded: a flush takes
 *  milliseconds, a catch-up's read a few seconds on a large state; past that, the others are not hearing from it. */
export const STALL_MS = 5000;

/** What /healthz adds to "degraded" (null: writes go through). */
export type WriteProblem = { redis: 'refusing-writes'; error: string } | { redis: 'writes-stalled'; pending: number; waitingMs: number } | null;

/** The write problem now: Redis refused the last write, or decisions have waited more than STALL_MS since the queue
 *  filled or a write last went through. Pure (time passed in). */
export function writeProblem(failing: string | null, pending: number, waitingSince: number | null, now: number): WriteProblem {
  if (failing !== null) return { redis: 'refusing-writes', error: failing };
  if (pending > 0 && waitingSince !== null && now - waitingSince > STALL_MS) return { redis: 'writes-stalled', pending, waitingMs: now - waitingSince };
  return null;
}

/** Follows the writes of one bus, and logs once on each change of writeProblem's kind. */
export class WriteHealth {
  private failing: string | null = null;
  private waitingSince: number | null = null;
  private reported: string = 'ok';
  private readonly log: BusLogger;
  constructor(log: BusLogger) { this.log = log; }

  /** The queue now holds `pending` (a decision queued, a reconnection: the wait counts from then). */
  waiting(pending: number, now: number, restart = false): void {
    this.waitingSince = pending === 0 ? null : restart ? now : (this.waitingSince ?? now);
  }
  /** A write went through: what still waits is waiting since now. */
  wrote(pending: number, now: number): void { this.failing = null; this.waitingSince = pending ? now : null; }
  /** Redis refused a write (or did not answer it). */
  refused(err: unknown): void { this.failing = String((err as Error)?.message ?? err).split('\n')[0].slice(0, 200); }

  problem(pending: number, now: number): WriteProblem { return writeProblem(this.failing, pending, this.waitingSince, now); }

  /** Logs a change of state (one line each way). */
  report(pending: number, now: number): void {
    const p = this.problem(pending, now), kind = p?.redis ?? 'ok';
    if (kind === this.reported) return;
    this.reported = kind;
    if (p) this.log.warn({ ...p }, 'redis: decisions are not reaching the other nodes (Redis connected but not taking writes); /healthz says degraded');
    else this.log.info({}, 'redis: writes go through again');
  }
}

/** Every connection answered PING within timeoutMs; rejects otherwise (a link dead without having closed). */
export async function pingWithin(conns: (Redis | null)[], timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('heartbeat timeout')), timeoutMs); });
  try { await Promise.race([Promise.all(conns.map((c) => c?.ping())), late]); } finally { clearTimeout(timer); }
}

/** Callers waiting for the connection (a node's start asks for the state and the secret): released by open() or
 *  after ms, answering whether the bus is healthy then. */
export class ReadyGate {
  private waiters: (() => void)[] = [];
  wait(ms: number, healthy: () => boolean): Promise<boolean> {
    if (healthy()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.waiters = this.waiters.filter((w) => w !== done); resolve(healthy()); }, ms);
      const done = () => { clearTimeout(t); resolve(healthy()); };
      this.waiters.push(done);
    });
  }
  open(): void { for (const w of this.waiters.splice(0)) w(); }
}
