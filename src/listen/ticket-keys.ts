// TLS session ticket keys. A returning client that presents a ticket skips
// the certificate signature (about a third of a full handshake's CPU here),
// but only where the key that sealed the ticket is in use. So one key serves
// the whole proxy: every worker process (a source always lands on one worker,
// but a client's address changes, and a replaced worker starts anew), every
// node sharing one Redis (a client moves between nodes behind DNS), and the
// next start of this node within the period (kept in the node's store).
//
// Keys rotate (tls.ticketKeyRotateSeconds, 12 h by default): a ticket key
// decrypts every session it sealed, so a key kept for months would undo the
// forward secrecy of months of sessions. Periods are counted from the epoch,
// so every node changes key at the same moment by its clock. Node's TLS holds
// one key at a time: at each change, returning clients make one full handshake.
// In Redis a key lives for two periods, then is gone.
import crypto from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { DecisionBus } from '../decisions/bus.ts';

export const TICKET_KEY_BYTES = 48;

/** The period `now` falls in. Pure. */
export const ticketPeriod = (now: number, rotateMs: number): number => Math.floor(now / rotateMs);

export interface TicketKeyDeps {
  rotateMs: number;
  now: () => number;
  /** The node's own store: the key of the period it last used (a restart within the period keeps it). */
  store: { loadTicketKey(): { period: number; key: Buffer } | null; saveTicketKey(period: number, key: Buffer): void };
  /** The key every node uses for `period`, `mine` offered when there is none yet (DecisionBus.ticketKey); absent or
   *  out of reach: `mine`. */
  shared?: (period: number, ttlMs: number, mine: Buffer) => Promise<Buffer>;
  /** Puts a key in use (on this process's TLS servers, or sent to the workers). */
  apply: (key: Buffer) => void;
  log: { warn(obj: object, msg?: string): void };
}

/** How often the key is checked against the shared one (a SET NX and a GET: nothing to Redis): a node that was cut
 *  off from Redis, or started without it, takes the cluster's key within this. */
const CHECK_MS = 5000;

export class TicketKeys {
  private readonly d: TicketKeyDeps;
  private period = -1;
  private key: Buffer | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** The shared key could not be had last time (said once, until it can again). */
  private unshared = false;
  private stopped = false;

  constructor(deps: TicketKeyDeps) { this.d = deps; }

  /** The key in use (null before the first refresh()). */
  get current(): Buffer | null { return this.key; }

  /** Finds the key of the period now (the one in use, the one kept from before a restart, a new one), takes the
   *  shared one instead where there is one, and puts it in use if it changed. */
  async refresh(): Promise<Buffer> {
    const period = ticketPeriod(this.d.now(), this.d.rotateMs);
    let mine = this.period === period ? this.key : null;
    if (!mine) {
      const kept = this.attempt('read from the store', () => this.d.store.loadTicketKey());
      mine = kept && kept.period === period && kept.key.length === TICKET_KEY_BYTES ? kept.key : crypto.randomBytes(TICKET_KEY_BYTES);
    }
    let key = mine;
    if (this.d.shared) {
      let why: string | null = null;
      try {
        const got = await this.d.shared(period, 2 * this.d.rotateMs, mine);
        if (got.length === TICKET_KEY_BYTES) key = got;
        else why = `the shared key has ${got.length} bytes`;
      } catch (err) {
        why = String(err);
      }
      if (why && !this.unshared) this.d.log.warn({ err: why }, 'tls: the shared session ticket key could not be had; this node seals with its own until it can');
      this.unshared = why !== null;
    }
    // Another refresh may have finished meanwhile: the later period wins. Stopped meanwhile (shutdown): the store
    // may be closed, and nothing is served any more.
    if (period < this.period || this.stopped) return this.key ?? key;
    if (period !== this.period || !this.key?.equals(key)) {
      this.period = period;
      this.key = key;
      this.attempt('saved', () => this.d.store.saveTicketKey(period, key));
      this.d.apply(key);
    }
    return key;
  }

  /** The store is the node's disk: a failure there costs resumption after a restart, never the key in use. */
  private attempt<T>(what: string, f: () => T): T | null {
    try { return f(); } catch (err) { this.d.log.warn({ err: String(err) }, `tls: the session ticket key could not be ${what}`); return null; }
  }

  /** Refreshes at every change of period and every CHECK_MS. */
  start(): void {
    const next = () => {
      const now = this.d.now(), untilChange = this.d.rotateMs - (now % this.d.rotateMs);
      this.timer = setTimeout(() => {
        this.refresh().catch((err: unknown) => this.d.log.warn({ err: String(err) }, 'tls: session ticket key not refreshed')).finally(() => { if (this.timer) next(); });
      }, Math.min(CHECK_MS, untilChange + 1));
      this.timer.unref();
    };
    next();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** The proxy's ticket keys, the first one found and in use (apply() called) before this returns; null without TLS
 *  listeners (nothing to seal tickets). */
export async function startTicketKeys(config: Config, deps: Omit<TicketKeyDeps, 'rotateMs' | 'shared'> & { bus: DecisionBus }): Promise<TicketKeys | null> {
  if (config.tls.listen.length === 0) return null;
  const bus = deps.bus;
  const keys = new TicketKeys({ ...deps, rotateMs: config.tls.ticketKeyRotateSeconds * 1000, shared: bus.ticketKey ? (p, ttl, mine) => bus.ticketKey!(p, ttl, mine) : undefined });
  await keys.refresh();
  keys.start();
  return keys;
}
