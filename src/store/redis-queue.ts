// The decisions a RedisBus has not written yet: one per address or domain (the
// newest wins), bounded (the oldest go first, and are remembered as never
// written so that a catch-up does not read their absence from Redis as another
// node's undoing), and kept in the node's own store while Redis is away, so
// that a node restarted before Redis returns still writes them.
import type { Redis } from 'ioredis';
import { decidedAt, type Decision } from '../decisions/bus.ts';
import { PendingWrites, pendingKey, type BusLogger, type RedisBusOptions, type RedisKeys } from './redis-keys.ts';
import { WRITE_LUA, writeArgs, writeKeys, writeOutcome } from './redis-write.ts';

/** The queue goes to the node's store at most this often while Redis is away (and at close). */
const SAVE_EVERY_MS = 1000;
/** Decisions an operator makes through the API that the node's store does not keep by itself (a ban it does), saved at
 *  once while Redis is away; past this many queued, the queue (one JSON value) is saved within SAVE_EVERY_MS instead. */
const LIFTINGS = new Set<Decision['kind']>(['unban', 'whitelist', 'unwhitelist']);
const SAVE_AT_ONCE_MAX = 20_000;
/** How long this node's written decisions keep older ones heard from others from being applied (standsOver). */
const RECENT_MS = 60_000;
/** Decisions written per script call. */
const FLUSH_BATCH = 2000;
/** A decision Redis refused this many times in a row leaves the queue, remembered as never written (in force here,
 *  unpublished) and queued again once the queue is empty (retryUnwritten). */
const MAX_REFUSALS = 3;

type Batch = ReturnType<PendingWrites['take']>;

export class DecisionQueue {
  private readonly pending: PendingWrites;
  private readonly max: number;
  private readonly store: RedisBusOptions['queue'] | null;
  private readonly log: BusLogger;
  /** Keys (pendingKey) of decisions dropped from the full queue: never written, still in force here. */
  private readonly unwritten = new Map<string, Decision>();
  private dropped = 0;
  private forgotten = 0;
  /** The saved copy is not empty (it must be cleared once everything is written). */
  private saved = false;
  private timer: NodeJS.Timeout | null = null;
  private atOnce = false;
  /** This node's decisions written in the last RECENT_MS, by key (when made; when written), oldest written first: a
   *  message published before this node's later decision reached Redis can arrive after the write's answer. */
  private readonly recent = new Map<string, { t: number | null; w: number }>();
  private warnedAt = 0;
  /** Times Redis refused a queued decision, by key. */
  private readonly refusals = new Map<string, number>();
  /** Keys written while a catch-up reads Redis (null: none running). A flush under way when the catch-up began goes
   *  on, so a decision may be written after the read passed its place: its absence from what was read says nothing. */
  private writtenInCatchUp: Set<string> | null = null;
  /** The bus closed: its last save is done, so whatever comes back into the queue after (a catch-up requeueing on
   *  its way out) is saved at once, or the next start would not write it. */
  private closed = false;

  constructor(max: number, store: RedisBusOptions['queue'] | null, log: BusLogger) {
    this.max = max;
    this.pending = new PendingWrites(max);
    this.store = store;
    this.log = log;
  }

  /** What an earlier run of this node decided and could not write (it stopped while Redis was away), queued again. */
  loadSaved(): Decision[] {
    let ds: Decision[] = [];
    try { ds = this.store?.load() ?? []; } catch (err) { this.log.warn({ err: String(err) }, 'redis: the saved queue could not be read'); }
    // Oldest first, as saved: past the bound the oldest are remembered as never written, as before the restart.
    for (const d of ds) this.put(d, false);
    this.saved = ds.length > 0;
    return ds;
  }

  get size(): number { return this.pending.size; }

  /** Queues a decision; `away`: Redis is out of reach, so the queue is saved soon. */
  put(d: Decision, away: boolean): void {
    const lost = this.pending.put(d);
    this.unwritten.delete(pendingKey(d));
    if (lost) {
      this.unwritten.set(pendingKey(lost), lost);
      if (this.dropped++ % 10_000 === 0) this.log.warn({ dropped: this.dropped, max: this.max }, 'redis: decision queue full, oldest dropped');
      // Bounded too (memory, and the saved copy): past as many again, the oldest dropped are forgotten, in force here
      // only, and a catch-up may take their absence from Redis for another node's undoing.
      if (this.unwritten.size > this.max) {
        this.unwritten.delete(this.unwritten.keys().next().value!);
        if (this.forgotten++ % 10_000 === 0) this.log.warn({ forgotten: this.forgotten, max: this.max }, 'redis: decisions dropped from the full queue were forgotten (never written)');
      }
    }
    // Dropped while Redis is there too: never written yet and in force here, it must outlive a kill -9.
    if (away && LIFTINGS.has(d.kind) && this.pending.size + this.unwritten.size <= SAVE_AT_ONCE_MAX) this.saveAtOnce();
    else if (away || lost) this.saveSoon();
  }

  /** A lifting or a whitelist change is an operator's, answered by the API: saved before anything else is answered, so
   *  that a kill -9 right after cannot bring a ban back at the restart (a ban is kept by the node's store at once). */
  private saveAtOnce(): void {
    if (!this.store || this.atOnce) return;
    this.atOnce = true;
    process.nextTick(() => { this.atOnce = false; this.save(); });
  }

  /** Queued again: `ds` (what this node knows in force, when Redis came back empty or never saw it) and what the
   *  full queue dropped (an unban, a lifting: what is in force does not name them), each unless a newer one for its key
   *  is queued. Each keeps the time it was made: written now, it still gives way to a later decision made elsewhere. */
  requeue(ds: Decision[] = []): void {
    for (const d of ds) this.pending.putIfAbsent(d);
    for (const d of this.unwritten.values()) this.pending.putIfAbsent(d);
    this.unwritten.clear();
    if (this.closed) this.save();
  }

  /** While Redis is there and the queue is empty, what was never written (dropped from the full queue, or refused by
   *  Redis: out of memory, read-only after a failover) is queued again; a catch-up comes only with a reconnection.
   *  True when something was. */
  retryUnwritten(): boolean {
    if (this.pending.size > 0 || this.unwritten.size === 0) return false;
    this.requeue();
    return true;
  }

  /** A decision of this node on this key is queued, was never written, or was written during the catch-up under way:
   *  what the catch-up read of Redis cannot tell it was lifted. */
  holds(key: string): boolean { return this.pending.has(key) || this.unwritten.has(key) || this.writtenInCatchUp?.has(key) === true; }

  /** A catch-up starts reading Redis (true) or is over (false). */
  catchingUp(on: boolean): void { this.writtenInCatchUp = on ? new Set() : null; }

  /** A batch was written (`sent`: what went to Redis, the rest had expired while queued; `wrote`: what Redis took of
   *  it, the rest was older than what Redis holds); a saved copy follows soon (emptied with the queue). */
  done(batch: Batch, wrote: ReadonlySet<Decision>, sent: ReadonlySet<Decision>): void {
    this.pending.done(batch);
    const now = Date.now();
    for (const [key, , d] of batch) {
      // A ban that ran out unwritten stands over nothing: another node's longer ban on its address, made before it and
      // read back by the catch-up its expiry calls for, must be applied.
      if (sent.has(d)) { this.recent.delete(key); this.recent.set(key, { t: decidedAt(d), w: now }); }
      if (wrote.has(d)) this.writtenInCatchUp?.add(key);
      // Dropped from the full queue while this batch was being written: it is written (or stale) all the same.
      if (this.unwritten.get(key) === d) this.unwritten.delete(key);
    }
    for (const [key, e] of this.recent) { if (e.w > now - RECENT_MS) break; this.recent.delete(key); }
    for (const [key] of batch) this.refusals.delete(key);
    // Within a second, not after every batch (the whole queue each time): a copy that replays a written decision
    // after a crash rewrites what Redis holds, or is refused there as older.
    if (this.saved) this.saveSoon();
  }

  /**
   * A batch Redis wrote but for `refused` (a key of the wrong type, a command it refused): the rest is done; the
   * refused stay queued (unpublished) and leave it after MAX_REFUSALS, so that they do not hold up what follows (in
   * force on this node only, remembered as never written, and tried again once the queue is empty).
   * Returns how many left it.
   */
  settle(all: Batch, refused: Set<Decision>, wrote: ReadonlySet<Decision>, sent: ReadonlySet<Decision>): number {
    this.done(all.filter(([, , d]) => !refused.has(d)), wrote, sent);
    let dropped = 0;
    for (const e of all.filter(([, , d]) => refused.has(d))) {
      const n = (this.refusals.get(e[0]) ?? 0) + 1;
      if (n < MAX_REFUSALS) { this.refusals.set(e[0], n); continue; }
      this.refusals.delete(e[0]);
      this.pending.done([e]);
      this.unwritten.set(e[0], e[2]);
      dropped++;
    }
    if (dropped) this.saveSoon();
    return dropped;
  }

  /** Writes the oldest batch and publishes what it wrote, in one script (redis-write.ts). Returns how many of its
   *  decisions were older than what another node decided since, or bans that ran out while queued (dropped: the caller
   *  reads back what is in force, which may hold another node's decision on their addresses, left aside meanwhile).
   *  Throws when Redis could not be reached or refused some of it (those stay queued, the rest is done; the error's
   *  `stale` counts those older ones then). */
  async write(cmd: Redis, k: RedisKeys, nodeId: string): Promise<number> {
    const batch = this.pending.take(FLUSH_BATCH);
    const { args, ds } = writeArgs(k, nodeId, batch.map(([, , d]) => d), Date.now());
    const expired = batch.length - ds.length, sent = new Set(ds);
    if (!ds.length) { this.done(batch, new Set(), sent); return expired; }
    const { stale, refused } = writeOutcome(ds, await cmd.eval(WRITE_LUA, 5, ...writeKeys(k), ...args));
    const wrote = new Set(ds.filter((d) => !stale.has(d) && !refused.has(d)));
    // An attack state older than another's changes what this node filters by nothing: no catch-up for it alone.
    const older = [...stale].filter((d) => d.kind !== 'attack').length;
    if (!refused.size) { this.done(batch, wrote, sent); return older + expired; }
    const dropped = this.settle(batch, refused, wrote, sent);
    if (dropped && Date.now() - this.warnedAt > 10_000) {
      this.warnedAt = Date.now();
      this.log.warn({ dropped }, 'redis: decisions Redis keeps refusing were set aside (in force on this node only; tried again when the queue is empty)');
    }
    throw Object.assign(new Error(`Redis refused ${refused.size} decision(s)`), { stale: older + expired });
  }

  /** This node decided on d's address or domain no earlier than d, and that decision is on its way to Redis, was
   *  just written, or could not be: it stands over d (Redis keeps it, or keeps a later one that comes back). */
  standsOver(d: Decision): boolean {
    const key = pendingKey(d), b = decidedAt(d);
    if (b === null) return false;
    // One still to be written replaces d in Redis even made in the same millisecond (Redis keeps the last of equals);
    // one written already was replaced there by d if d is as late.
    const queued = this.pending.get(key) ?? this.unwritten.get(key);
    if (queued && (decidedAt(queued) ?? -Infinity) >= b) return true;
    const written = this.recent.get(key);
    return !!written && written.w > Date.now() - RECENT_MS && (written.t ?? -Infinity) > b;
  }

  private saveSoon(): void {
    if (!this.store || this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.save(); }, SAVE_EVERY_MS);
    this.timer.unref();
  }

  /** The last save, when the bus closes: what could not be written waits in the node's store for its next start. */
  close(): void {
    this.closed = true;
    this.save();
  }

  /** Writes the queue to the node's store now. */
  save(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (!this.store) return;
    // What the full queue dropped too (older, so first): in force here and never written, it must outlive a restart.
    const ds = [...this.unwritten.values(), ...this.pending.all()];
    if (ds.length === 0 && !this.saved) return;
    try { this.store.save(ds); this.saved = ds.length > 0; } catch (err) { this.log.warn({ err: String(err) }, 'redis: the queue could not be saved'); }
  }
}
