// Decisions shared by many nodes through one Redis. What is in force lives in
// Redis (so a node that starts or returns reads all of it), and every change is
// also published on one channel (so the other nodes apply it within a round
// trip). Counting never comes here: only decisions.
//
// Keys and parsing: redis-keys.ts; writes: redis-write.ts; the queue: redis-queue.ts; the catch-up: redis-resync.ts.
// Publishing never blocks nor throws: a decision is queued (newest per address or domain, bounded); a flush writes
// the queue by one script that keeps the later decision and publishes what it wrote. Redis away, the queue keeps
// them; back, they are written, the state is read back, and what differs is delivered (decided elsewhere).
import os from 'node:os';
import crypto from 'node:crypto';
import type { Redis } from 'ioredis';
import { redisClient } from './redis-client.ts';
import type { Decision, DecisionBus, DecisionSnapshot } from '../decisions/bus.ts';
import { parseMessage, redisKeys, sharedValue, type RedisKeys, type RedisSnapshot, type BusLogger, type RedisBusOptions } from './redis-keys.ts';
import { Known, checkEpoch, deliverInSteps, pause, pruneBans, readState } from './redis-resync.ts';
import { DecisionQueue } from './redis-queue.ts';
import { ClockCheck } from './redis-clock.ts';
import { SharedSecret } from './redis-secret.ts';
import { ReadyGate, WriteHealth, pingWithin, type WriteProblem } from './redis-health.ts';

const PRUNE_EVERY_MS = 10_000;
/** A write that failed is tried again after this (Redis refusing a command would otherwise be asked twice a second). */
const RETRY_MS = 2000;

export class RedisBus implements DecisionBus {
  readonly nodeId: string;
  private readonly prefix: string;
  private readonly k: RedisKeys;
  private readonly log: BusLogger;
  private readonly waitMs: number;
  private readonly heartbeatTimeoutMs: number;
  private pinging = false;
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly subscribers: ((d: Decision) => void)[] = [];
  /** Decisions not yet written (newest per key; redis-queue.ts). */
  private readonly pending: DecisionQueue;
  private flushing = false; private flushScheduled = false;
  private cmdReady = false; private subReady = false;
  /** True once this bus has been connected and lost the connection (or answered from local knowledge). */
  private needResync = false;
  private resyncing = false;
  /** Messages that arrived during a resync, delivered after it. */
  private held: Decision[] | null = null;
  private wasHealthy = false;
  private closed = false;
  /** What this node knows is in force (published here or received): the base a resync diffs against. */
  private readonly known = new Known();
  private readonly timers: NodeJS.Timeout[] = [];
  private lastPrune = 0;
  readonly clock: ClockCheck; // this node's clock against Redis's (redis-clock.ts): decisions are ordered by time
  /** Redis's epoch as last seen (kept in the node's store: epochStore); `epochToKeep` once all written back is in. */
  private epoch: string | null = null;
  private epochToKeep: string | null = null;
  private readonly epochStore: RedisBusOptions['epoch'] | null;
  /** What this node holds from its own store (snapshot's `local`), until a catch-up has reconciled it with Redis. */
  private own: DecisionSnapshot | null = null;
  /** When a failure was last logged (one line every 10 s at most while it lasts). */
  private warnedAt = 0;
  private readonly sharedSecret: SharedSecret; // the challenge secret, taken up at each connection (redis-secret.ts)
  private readonly ready = new ReadyGate();
  private readonly writes: WriteHealth; // whether writes go through, connected (redis-health.ts)

  constructor(opts: RedisBusOptions) {
    this.prefix = opts.prefix ?? 'scrubber:';
    this.nodeId = opts.nodeId ?? `${os.hostname()}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;
    this.log = opts.logger ?? { info() {}, warn() {} };
    this.pending = new DecisionQueue(opts.maxPending ?? 100_000, opts.queue ?? null, this.log);
    this.epochStore = opts.epoch ?? null;
    this.writes = new WriteHealth(this.log);
    this.epoch = this.epochStore?.load() ?? null;
    for (const d of this.pending.loadSaved()) this.known.remember(d);
    this.waitMs = opts.waitMs ?? 2000;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 1500;
    this.k = redisKeys(this.prefix, opts.url);
    this.clock = new ClockCheck(this.log, () => this.cmd.time(), opts.clock);
    const common = {
      // Our own queue holds what could not be sent; ioredis must not hold or retry commands itself.
      enableOfflineQueue: false, maxRetriesPerRequest: 0,
      connectTimeout: 2000,
      retryStrategy: (times: number) => Math.min(100 * times, 1000),
      lazyConnect: false,
    };
    this.cmd = redisClient(opts.url, { ...common, commandTimeout: 10_000, connectionName: `scrubber-${this.nodeId}` }, this.log);
    this.sub = redisClient(opts.url, { ...common, autoResubscribe: false, connectionName: `scrubber-sub-${this.nodeId}` }, null);
    this.sharedSecret = new SharedSecret(this.cmd, this.k.secret, this.log);
    if (opts.keepSecret) this.sharedSecret.watch(opts.keepSecret); // the node's store keeps it for a restart without Redis

    for (const c of [this.cmd, this.sub]) c.on('error', () => {}); // state changes are followed through 'ready' / 'close'
    this.cmd.on('ready', () => { this.cmdReady = true; this.onUp(); });
    this.cmd.on('close', () => { this.cmdReady = false; this.onDown(); });
    this.sub.on('ready', () => {
      this.sub.subscribe(this.k.channel).then(() => { this.subReady = true; this.onUp(); }, () => this.sub.disconnect(true));
    });
    this.sub.on('close', () => { this.subReady = false; this.onDown(); });
    this.sub.on('message', (channel: string, msg: string) => { if (channel === this.k.channel) this.onMessage(msg); });

    const hb = opts.heartbeatMs ?? 1000;
    const beat = setInterval(() => this.heartbeat(), hb);
    beat.unref();
    this.timers.push(beat);
  }

  get healthy(): boolean { return this.cmdReady && this.subReady && !this.closed; }
  /** Connected, yet what this node decides is not reaching the others: Redis refuses writes, or they wait too long. */
  get writeProblem(): WriteProblem { return this.healthy ? this.writes.problem(this.pending.size, Date.now()) : null; }
  get catchingUp(): boolean { return this.resyncing; } // a catch-up is under way (tests wait for its end)
  /** Decisions waiting to be written (while Redis is out of reach). */
  get pendingCount(): number { return this.pending.size; }
  publish(d: Decision): void {
    if (this.closed) return;
    try {
      this.known.remember(d);
      this.pending.put(d, !this.healthy);
      this.writes.waiting(this.pending.size, Date.now());
      this.scheduleFlush();
    } catch (err) {
      this.log.warn({ err: String(err) }, 'redis: publish failed');
    }
  }

  subscribe(fn: (d: Decision) => void): void { this.subscribers.push(fn); }
  /** Lifted early by this node's cap: no longer part of what it knows in force (so that stays bounded too). */
  evicted(ips: string[]): void { for (const ip of ips) this.known.bans.delete(ip); }

  async snapshot(now: number, local?: DecisionSnapshot): Promise<RedisSnapshot> {
    // What this node holds is known: the catch-up lifts what others lifted, or writes it back (first contact, wiped).
    if (local) { this.own = local; this.known.adopt({ ...local, attacks: [] }); this.needResync = true; }
    if (!(await this.waitReady())) {
      this.needResync = true; // when Redis comes, deliver what it holds
      this.log.warn({}, 'redis: unreachable, snapshot from local knowledge');
      return this.known.snapshot(now);
    }
    try {
      const snap = await readState(this.cmd, this.k, now);
      // The caller puts this in force: it is now what this node knows (the base of a later resync).
      this.known.adopt(snap);
      return snap;
    } catch (err) {
      this.needResync = true;
      this.log.warn({ err: String(err) }, 'redis: snapshot failed, from local knowledge');
      return this.known.snapshot(now);
    }
  }

  ticketKey(p: number, ttlMs: number, mine: Buffer): Promise<Buffer> { return this.healthy ? sharedValue(this.cmd, this.k.ticket + p, mine, ttlMs) : Promise.reject(new Error('Redis is out of reach')); }
  async secret(local: Buffer): Promise<Buffer> { return this.sharedSecret.first(local, await this.waitReady()); }
  /** The shared secret, when this node takes it up after its start (Redis reached late, or emptied). */
  watchSecret(fn: (secret: Buffer) => void): void { this.sharedSecret.watch(fn); }

  async close(): Promise<void> {
    if (this.closed) return;
    // A last flush of what is pending, when Redis is there.
    for (let i = 0; i < 40 && this.pending.size && this.cmdReady; i++) {
      if (this.flushing) await new Promise((r) => setTimeout(r, 25));
      else await this.flush();
    }
    this.closed = true;
    // What could not be written waits in the node's store for its next start (or the store forgets an old queue).
    this.pending.close();
    for (const t of this.timers) clearInterval(t);
    this.ready.open();
    this.cmd.disconnect();
    this.sub.disconnect();
  }

  // --- connection state ---

  private onUp(): void {
    if (!this.healthy) return;
    this.ready.open();
    if (!this.wasHealthy) {
      this.wasHealthy = true;
      this.writes.waiting(this.pending.size, Date.now(), true); // what waited while cut off waits from now
      this.log.info({ node: this.nodeId, pending: this.pending.size }, 'redis: connected');
    }
    this.clock.maybeCheck(true);
    void this.resync();
  }

  private onDown(): void {
    if (this.closed || !this.wasHealthy) return;
    this.wasHealthy = false;
    this.needResync = true;
    this.sharedSecret.forget(); // read again at the next connection (Redis may come back another, or empty)
    this.pending.save(); // what was on its way waits in the node's store too
    this.log.warn({ node: this.nodeId }, 'redis: connection lost; protecting on local state, decisions queued');
  }

  private heartbeat(): void {
    if (!this.cmdReady || this.closed || this.pinging) return;
    this.pinging = true;
    // Both connections: the subscriber's can die silently too (an idle link cut by a NAT or a firewall), and then
    // no decision of another node would arrive while this one looks healthy.
    // Answered: Redis's epoch too (a FLUSHALL while connected empties it as a restart does: written back at once).
    pingWithin([this.cmd, this.subReady ? this.sub : null], this.heartbeatTimeoutMs).then(() => { if (this.healthy) void this.resync(); }, () => {
      // No answer in time: the link is dead without having closed. Reconnect both connections.
      if (this.closed || this.cmd.status !== 'ready') return;
      this.cmdReady = false;
      this.onDown();
      this.cmd.disconnect(true);
      this.sub.disconnect(true);
    }).finally(() => { this.pinging = false; });
    this.clock.maybeCheck();
    this.writes.waiting(this.pending.size, Date.now()); this.writes.report(this.pending.size, Date.now()); // queued by a catch-up too
    if (this.healthy && !this.resyncing && this.pending.retryUnwritten()) this.scheduleFlush(); // else: a reconnection
    const now = Date.now();
    if (now - this.lastPrune > PRUNE_EVERY_MS) { this.lastPrune = now; pruneBans(this.cmd, this.k, now).catch(() => {}); this.known.forgetExpired(now); }
  }

  private waitReady(): Promise<boolean> { return this.closed ? Promise.resolve(false) : this.ready.wait(this.waitMs, () => this.healthy); }

  // --- writing ---

  private scheduleFlush(): void {
    if (this.flushScheduled || this.flushing || !this.cmdReady || this.resyncing) return;
    this.flushScheduled = true;
    setImmediate(() => { this.flushScheduled = false; void this.flush(); });
  }

  private async flush(): Promise<void> {
    if (this.flushing || !this.cmdReady || this.closed || !this.pending.size) return;
    this.flushing = true;
    let failed = false, stale = 0; // stale: older than another node's since: this node reads back what is in force
    try {
      // Asked for at once (a flush may run on for long, or fail later): the later decision must reach this node.
      while (this.pending.size && this.cmdReady) {
        const n = await this.pending.write(this.cmd, this.k, this.nodeId); this.writes.wrote(this.pending.size, Date.now());
        if (n) { stale += n; this.needResync = true; }
      }
      if (stale) this.log.info({ decisions: stale }, 'redis: decisions older than what another node decided since, or expired while queued, were not written');
    } catch (err) {
      failed = true; // a refusal alone calls for no catch-up (Redis would refuse it again); older decisions do
      this.writes.refused(err);
      if ((err as { stale?: number }).stale) this.needResync = true;
      if (Date.now() - this.warnedAt > 10_000) { this.warnedAt = Date.now(); this.log.warn({ err: String(err), pending: this.pending.size }, 'redis: write failed, decisions kept'); }
    } finally {
      this.flushing = false;
      this.writes.report(this.pending.size, Date.now()); // a change logged as it comes (the heartbeat: a stall)
      if (failed) setTimeout(() => this.scheduleFlush(), RETRY_MS).unref();
      else if (this.pending.size && this.cmdReady && !this.closed) this.scheduleFlush();
      this.keepEpoch();
    }
  }

  /** Kept only once all written back is in Redis (earlier, a crash would have the next start lift it unwritten). */
  private keepEpoch(): void {
    if (!this.epochToKeep || this.pending.size > 0 || this.resyncing) return;
    try { this.epochStore?.save(this.epochToKeep); this.epochToKeep = null; } catch (err) { this.log.warn({ err: String(err) }, 'redis: epoch not kept'); }
  }

  /** On every connection: check Redis still has its data; back from a cut, write what was queued, then read what
   *  is in force and deliver what differs from what we know. */
  private async resync(): Promise<void> {
    if (this.resyncing) return;
    this.resyncing = true;
    this.held = [];
    try {
      const { epoch, wiped } = await checkEpoch(this.cmd, this.k.epoch, this.epoch);
      if (wiped) {
        this.log.warn({ bans: this.known.bans.size }, 'redis: its data is gone (restarted without persistence?); writing back what this node knows');
        // The challenge secret in use too (SET NX): or, where a node that started since set its own first, that one.
        this.sharedSecret.forget();
        this.needResync = true;
      }
      // A node that could not read it at its start takes it up here (a failure does not hold the catch-up back).
      await this.sharedSecret.tryCheck();
      const first = this.epoch === null; // never reconciled with this Redis (a first start, or no epoch kept)
      this.epoch = epoch;
      if (!this.needResync) return;
      await this.flush();
      if (!this.healthy) return; // cut again: the next 'ready' retries (what Redis refuses stays queued: the diff skips it)
      const now = Date.now();
      this.needResync = false; // before the read, which takes steps: a link lost meanwhile sets it again (onDown)
      this.pending.catchingUp(true); // from here a write may land where the read has passed (holds, below)
      const snap = await readState(this.cmd, this.k, now, pause, epoch);
      // Written back, not lifted: what Redis lacks of all this node knows when Redis lost its data; of what this node
      // holds from its own store, all of it at a first contact, else its bans (a node killed before its queue was
      // saved): the write keeps one only where Redis remembers no later lifting (<p>gone), and one refused as older
      // is lifted here by the catch-up that calls for. Liftings are remembered 7 days and a ban lasts 8 h at most;
      // a whitelist entry has no end, so one lifted longer ago would come back: not written back on a restart.
      if (wiped) this.pending.requeue([...this.known.missingFrom(snap, now), ...this.known.liftings(now)]);
      else if (this.own) this.pending.requeue(new Known(first ? this.own : { ...this.own, whitelist: [] }).missingFrom(snap, now));
      this.own = null;
      if (epoch && epoch !== this.epochStore?.load()) this.epochToKeep = epoch;
      const out = await this.known.diffInSteps(snap, Date.now(), (key) => this.pending.holds(key), pause); // expiry as of after the read
      if (out.length) this.log.info({ decisions: out.length }, 'redis: caught up with decisions made while cut off');
      await deliverInSteps(out, (key) => this.pending.holds(key), (d) => this.deliver(d), () => this.closed);
      this.pending.requeue(); // what a full queue dropped, now
    } catch (err) {
      this.needResync = true;
      if (Date.now() - this.warnedAt > 10_000) { this.warnedAt = Date.now(); this.log.warn({ err: String(err) }, 'redis: resync failed, retried'); }
    } finally {
      const held = this.held ?? [];
      this.held = null;
      this.resyncing = false;
      this.pending.catchingUp(false);
      if (!this.closed) for (const d of held) this.deliver(d);
      if (this.needResync && this.healthy) setTimeout(() => { if (this.healthy && this.needResync) void this.resync(); }, 500).unref();
      this.scheduleFlush();
      this.keepEpoch();
    }
  }

  private onMessage(msg: string): void {
    const m = parseMessage(msg);
    if (!m || m.node === this.nodeId) return;
    for (const d of m.ds) if (this.held) this.held.push(d); else this.deliver(d);
  }

  private deliver(d: Decision): void {
    if (this.pending.standsOver(d)) return; // this node's later decision is on its way: it replaces d everywhere
    try { this.known.remember(d); } catch (err) { this.log.warn({ err: String(err) }, 'redis: a decision not understood, ignored'); return; }
    for (const fn of this.subscribers) {
      try { fn(d); } catch (err) { this.log.warn({ err: String(err), kind: d.kind }, 'redis: a subscriber threw'); }
    }
  }
}
