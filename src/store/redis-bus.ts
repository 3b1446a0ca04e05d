// Decisions shared by many nodes through one Redis. What is in force lives in
// Redis (so a node that starts or returns reads all of it), and every change is
// also published on one channel (so the other nodes apply it within a round
// trip). Counting never comes here: only decisions.
//
// Key layout (prefix defaults to "scrubber:"):
//   <p>bans        hash    ip → JSON BanEntry
//   <p>bans:exp    zset    ip scored by expiresAt (pruning the hash)
//   <p>whitelist   hash    ip → JSON WhitelistEntry
//   <p>attack      hash    domain → JSON { under, since, reason }
//   <p>secret      string  the challenge secret (SET NX: the first node wins)
//   <p>epoch       string  a random id set NX; a bus that finds it changed knows
//                          Redis lost its data (restarted without persistence)
//                          and writes back everything it knows
//   <p>decisions   channel JSON { node, ds: Decision[] }, a node ignores its own
//
// Publishing never blocks and never throws: a decision goes into a pending map
// (one entry per ban key / whitelist key / domain, newest wins, bounded), and a
// flush writes the pending ones in one MULTI with their PUBLISH. While Redis is
// out of reach the map keeps them; when it returns they are written, and the
// cluster's state is read back and the difference delivered to subscribers
// (decisions made elsewhere while this node was cut off).
import os from 'node:os';
import crypto from 'node:crypto';
import { Redis } from 'ioredis';
import type { BanEntry } from '../decisions/blacklist.ts';
import type { WhitelistEntry } from '../decisions/lists.ts';
import type { Decision, DecisionBus, DecisionSnapshot } from '../decisions/bus.ts';

export interface AttackState { domain: string; under: boolean; since: number; reason: string | null }

/** The snapshot a RedisBus returns: DecisionSnapshot plus the attack state of every domain. */
export interface RedisSnapshot extends DecisionSnapshot { attacks: AttackState[] }

interface BusLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface RedisBusOptions {
  /** redis://host:port/db */
  url: string;
  /** Key and channel prefix; default "scrubber:". */
  prefix?: string;
  /** This node's id (decisions it published come back on the channel and are ignored); default host:pid:random. */
  nodeId?: string;
  logger?: BusLogger;
  /** Most decisions kept while Redis is out of reach; default 100 000 (the oldest are dropped beyond). */
  maxPending?: number;
  /** How long snapshot() and secret() wait for a connection before answering from what this node knows; default 2000 ms. */
  waitMs?: number;
  /** Heartbeat period; default 1000 ms. */
  heartbeatMs?: number;
  /** A heartbeat PING not answered within this marks the bus unhealthy and reconnects; default 1500 ms. */
  heartbeatTimeoutMs?: number;
}

const PRUNE_LUA = `
local n = 0
for i = 1, 50 do
  local ips = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 500)
  if #ips == 0 then break end
  redis.call('HDEL', KEYS[1], unpack(ips))
  redis.call('ZREM', KEYS[2], unpack(ips))
  n = n + #ips
end
return n`;

const FLUSH_BATCH = 2000;
const PRUNE_EVERY_MS = 10_000;

const pendingKey = (d: Decision): string => {
  switch (d.kind) {
    case 'ban': return `b:${d.entry.ip}`;
    case 'unban': return `b:${d.ip}`;
    case 'whitelist': return `w:${d.entry.ip}`;
    case 'unwhitelist': return `w:${d.ip}`;
    case 'attack': return `a:${d.domain}`;
  }
};

const score = (expiresAt: number): string | number => (Number.isFinite(expiresAt) ? expiresAt : '+inf');

export class RedisBus implements DecisionBus {
  readonly nodeId: string;
  private readonly prefix: string;
  private readonly k: { bans: string; exp: string; wl: string; attack: string; secret: string; epoch: string; channel: string };
  private readonly log: BusLogger;
  private readonly maxPending: number;
  private readonly waitMs: number;
  private readonly heartbeatTimeoutMs: number;
  private pinging = false;
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly subscribers: ((d: Decision) => void)[] = [];
  /** Decisions not yet written, by key; Map order is oldest first. */
  private pending = new Map<string, { d: Decision; seq: number }>();
  private seq = 0;
  private dropped = 0;
  private flushing = false;
  private flushScheduled = false;
  private cmdReady = false;
  private subReady = false;
  /** True once this bus has been connected and lost the connection (or answered from local knowledge). */
  private needResync = false;
  private resyncing = false;
  /** Messages that arrived during a resync, delivered after it. */
  private held: Decision[] | null = null;
  private wasHealthy = false;
  private closed = false;
  /** What this node knows is in force (published here or received): the base a resync diffs against. */
  private readonly known = {
    bans: new Map<string, BanEntry>(),
    wl: new Map<string, WhitelistEntry>(),
    attack: new Map<string, string>(),
  };
  private readonly timers: NodeJS.Timeout[] = [];
  private lastPrune = 0;
  private epoch: string | null = null;
  private readyWaiters: (() => void)[] = [];

  constructor(opts: RedisBusOptions) {
    this.prefix = opts.prefix ?? 'scrubber:';
    this.nodeId = opts.nodeId ?? `${os.hostname()}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;
    this.log = opts.logger ?? { info() {}, warn() {} };
    this.maxPending = opts.maxPending ?? 100_000;
    this.waitMs = opts.waitMs ?? 2000;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 1500;
    const p = this.prefix;
    this.k = { bans: `${p}bans`, exp: `${p}bans:exp`, wl: `${p}whitelist`, attack: `${p}attack`, secret: `${p}secret`, epoch: `${p}epoch`, channel: `${p}decisions` };
    const common = {
      // Our own queue holds what could not be sent; ioredis must not hold or retry commands itself.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 2000,
      retryStrategy: (times: number) => Math.min(100 * times, 1000),
      lazyConnect: false,
    };
    this.cmd = new Redis(opts.url, { ...common, commandTimeout: 10_000, connectionName: `scrubber-${this.nodeId}` });
    this.sub = new Redis(opts.url, { ...common, autoResubscribe: false, connectionName: `scrubber-sub-${this.nodeId}` });

    this.cmd.on('error', () => {}); // state changes are followed through 'ready' / 'close'
    this.sub.on('error', () => {});
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

  /** Decisions waiting to be written (while Redis is out of reach). */
  get pendingCount(): number { return this.pending.size; }

  publish(d: Decision): void {
    if (this.closed) return;
    try {
      this.remember(d);
      const key = pendingKey(d);
      this.pending.delete(key); // newest of a key goes last
      this.pending.set(key, { d, seq: ++this.seq });
      if (this.pending.size > this.maxPending) {
        const oldest = this.pending.keys().next().value as string;
        this.pending.delete(oldest);
        if (this.dropped++ % 10_000 === 0) this.log.warn({ dropped: this.dropped, max: this.maxPending }, 'redis: decision queue full, oldest dropped');
      }
      this.scheduleFlush();
    } catch (err) {
      this.log.warn({ err: String(err) }, 'redis: publish failed');
    }
  }

  subscribe(fn: (d: Decision) => void): void { this.subscribers.push(fn); }

  async snapshot(now: number): Promise<RedisSnapshot> {
    if (!(await this.waitReady())) {
      this.needResync = true; // when Redis comes, deliver what it holds
      this.log.warn({}, 'redis: unreachable, snapshot from local knowledge');
      return this.localSnapshot(now);
    }
    try {
      const snap = await this.read(now);
      // The caller puts this in force: it is now what this node knows (the base of a later resync).
      for (const e of snap.bans) this.known.bans.set(e.ip, e);
      for (const e of snap.whitelist) this.known.wl.set(e.ip, e);
      for (const a of snap.attacks) this.known.attack.set(a.domain, attackJson({ kind: 'attack', ...a }));
      return snap;
    } catch (err) {
      this.needResync = true;
      this.log.warn({ err: String(err) }, 'redis: snapshot failed, from local knowledge');
      return this.localSnapshot(now);
    }
  }

  async secret(local: Buffer): Promise<Buffer> {
    if (!(await this.waitReady())) {
      this.log.warn({}, 'redis: unreachable, challenge secret is this node\'s own');
      return local;
    }
    try {
      await this.cmd.set(this.k.secret, local, 'NX');
      const shared = await this.cmd.getBuffer(this.k.secret);
      return shared && shared.length ? shared : local;
    } catch (err) {
      this.log.warn({ err: String(err) }, 'redis: secret not read, challenge secret is this node\'s own');
      return local;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // A last flush of what is pending, when Redis is there.
    for (let i = 0; i < 40 && this.pending.size && this.cmdReady; i++) {
      if (this.flushing) await new Promise((r) => setTimeout(r, 25));
      else await this.flush();
    }
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const w of this.readyWaiters.splice(0)) w();
    this.cmd.disconnect();
    this.sub.disconnect();
  }

  // --- connection state ---

  private onUp(): void {
    if (!this.healthy) return;
    for (const w of this.readyWaiters.splice(0)) w();
    if (!this.wasHealthy) {
      this.wasHealthy = true;
      this.log.info({ node: this.nodeId, pending: this.pending.size }, 'redis: connected');
    }
    void this.resync();
  }

  private onDown(): void {
    if (this.closed) return;
    if (this.wasHealthy) {
      this.wasHealthy = false;
      this.needResync = true;
      this.log.warn({ node: this.nodeId }, 'redis: connection lost; protecting on local state, decisions queued');
    }
  }

  private heartbeat(): void {
    if (!this.cmdReady || this.closed || this.pinging) return;
    this.pinging = true;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('heartbeat timeout')), this.heartbeatTimeoutMs); });
    Promise.race([this.cmd.ping(), late]).then(() => {}, () => {
      // No answer in time: the link is dead without having closed. Reconnect both connections.
      if (this.closed || this.cmd.status !== 'ready') return;
      this.cmdReady = false;
      this.onDown();
      this.cmd.disconnect(true);
      this.sub.disconnect(true);
    }).finally(() => { clearTimeout(timer); this.pinging = false; });
    if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
      this.lastPrune = Date.now();
      this.prune(Date.now()).catch(() => {});
      this.forgetExpired(Date.now());
    }
  }

  private waitReady(): Promise<boolean> {
    if (this.healthy) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.readyWaiters = this.readyWaiters.filter((w) => w !== done); resolve(this.healthy); }, this.waitMs);
      const done = () => { clearTimeout(t); resolve(this.healthy); };
      this.readyWaiters.push(done);
    });
  }

  // --- writing ---

  private scheduleFlush(): void {
    if (this.flushScheduled || this.flushing || !this.cmdReady || this.resyncing) return;
    this.flushScheduled = true;
    setImmediate(() => { this.flushScheduled = false; void this.flush(); });
  }

  private async flush(): Promise<void> {
    if (this.flushing || !this.cmdReady || this.closed || !this.pending.size) return;
    this.flushing = true;
    let failed = false;
    try {
      while (this.pending.size && this.cmdReady) {
        const batch: [string, number, Decision][] = [];
        for (const [key, { d, seq }] of this.pending) {
          batch.push([key, seq, d]);
          if (batch.length >= FLUSH_BATCH) break;
        }
        const now = Date.now();
        const m = this.cmd.multi();
        const ds: Decision[] = [];
        for (const [, , d] of batch) {
          if (d.kind === 'ban' && d.entry.expiresAt <= now) continue; // expired while queued
          this.write(m, d);
          ds.push(d);
        }
        if (ds.length) m.publish(this.k.channel, JSON.stringify({ node: this.nodeId, ds }));
        try {
          if (ds.length) await m.exec(); else m.discard();
        } catch (err) {
          this.log.warn({ err: String(err), pending: this.pending.size }, 'redis: write failed, decisions kept');
          failed = true;
          return;
        }
        for (const [key, seq] of batch) if (this.pending.get(key)?.seq === seq) this.pending.delete(key);
      }
    } finally {
      this.flushing = false;
      if (failed) setTimeout(() => this.scheduleFlush(), 500).unref();
      else if (this.pending.size && this.cmdReady && !this.closed) this.scheduleFlush();
    }
  }

  private write(m: ReturnType<Redis['multi']>, d: Decision): void {
    switch (d.kind) {
      case 'ban':
        m.hset(this.k.bans, d.entry.ip, JSON.stringify(d.entry));
        m.zadd(this.k.exp, score(d.entry.expiresAt), d.entry.ip);
        break;
      case 'unban':
        m.hdel(this.k.bans, d.ip);
        m.zrem(this.k.exp, d.ip);
        break;
      case 'whitelist': m.hset(this.k.wl, d.entry.ip, JSON.stringify(d.entry)); break;
      case 'unwhitelist': m.hdel(this.k.wl, d.ip); break;
      case 'attack': m.hset(this.k.attack, d.domain, JSON.stringify({ under: d.under, since: d.since, reason: d.reason })); break;
    }
  }

  private async prune(now: number): Promise<void> {
    if (!this.cmdReady) return;
    await this.cmd.eval(PRUNE_LUA, 2, this.k.bans, this.k.exp, String(now));
  }

  // --- reading ---

  private async read(now: number): Promise<RedisSnapshot> {
    await this.prune(now).catch(() => {});
    const [bans, wl, attack] = await Promise.all([this.cmd.hgetall(this.k.bans), this.cmd.hgetall(this.k.wl), this.cmd.hgetall(this.k.attack)]);
    const out: RedisSnapshot = { bans: [], whitelist: [], attacks: [] };
    for (const v of Object.values(bans)) {
      const e = parse<BanEntry>(v);
      if (e && (e.expiresAt ?? Infinity) > now) { if (e.expiresAt == null) e.expiresAt = Infinity; out.bans.push(e); }
    }
    for (const v of Object.values(wl)) { const e = parse<WhitelistEntry>(v); if (e) out.whitelist.push(e); }
    for (const [domain, v] of Object.entries(attack)) {
      const a = parse<{ under: boolean; since: number; reason: string | null }>(v);
      if (a) out.attacks.push({ domain, under: !!a.under, since: a.since, reason: a.reason ?? null });
    }
    return out;
  }

  private localSnapshot(now: number): RedisSnapshot {
    const out: RedisSnapshot = { bans: [], whitelist: [], attacks: [] };
    for (const e of this.known.bans.values()) if (e.expiresAt > now) out.bans.push(e);
    for (const e of this.known.wl.values()) out.whitelist.push(e);
    for (const [domain, v] of this.known.attack) out.attacks.push({ domain, ...parse<Omit<AttackState, 'domain'>>(v)! });
    return out;
  }

  /** True when Redis lost its data since this bus last saw it. */
  private async checkEpoch(): Promise<boolean> {
    await this.cmd.set(this.k.epoch, crypto.randomBytes(8).toString('hex'), 'NX');
    const cur = await this.cmd.get(this.k.epoch);
    const wiped = this.epoch !== null && cur !== this.epoch;
    this.epoch = cur;
    return wiped;
  }

  /** Redis came back empty: queue everything this node knows to be in force, so the cluster's state is rebuilt. */
  private reseed(): void {
    const now = Date.now();
    const add = (d: Decision) => { const key = pendingKey(d); if (!this.pending.has(key)) this.pending.set(key, { d, seq: ++this.seq }); };
    for (const e of this.known.bans.values()) if (e.expiresAt > now) add({ kind: 'ban', entry: e });
    for (const e of this.known.wl.values()) add({ kind: 'whitelist', entry: e });
    for (const [domain, v] of this.known.attack) add({ kind: 'attack', domain, ...parse<Omit<AttackState, 'domain'>>(v)! });
  }

  /** On every connection: check Redis still has its data; back from a cut, write what was queued, then read what
   *  is in force and deliver what differs from what we know. */
  private async resync(): Promise<void> {
    if (this.resyncing) return;
    this.resyncing = true;
    this.held = [];
    try {
      if (await this.checkEpoch()) {
        this.log.warn({ bans: this.known.bans.size }, 'redis: its data is gone (restarted without persistence?); writing back what this node knows');
        this.reseed();
        this.needResync = true;
      }
      if (!this.needResync) return;
      await this.flush();
      if (this.pending.size || !this.healthy) return; // cut again: the next 'ready' retries
      const now = Date.now();
      const snap = await this.read(now);
      const out: Decision[] = [];
      const seenBans = new Set<string>();
      for (const e of snap.bans) {
        seenBans.add(e.ip);
        if (!sameBan(this.known.bans.get(e.ip), e)) out.push({ kind: 'ban', entry: e });
      }
      for (const [ip, e] of this.known.bans) {
        if (!seenBans.has(ip) && e.expiresAt > now) out.push({ kind: 'unban', ip });
      }
      const seenWl = new Set<string>();
      for (const e of snap.whitelist) {
        seenWl.add(e.ip);
        if (!sameWl(this.known.wl.get(e.ip), e)) out.push({ kind: 'whitelist', entry: e });
      }
      for (const ip of this.known.wl.keys()) if (!seenWl.has(ip)) out.push({ kind: 'unwhitelist', ip });
      for (const a of snap.attacks) {
        const d: Decision = { kind: 'attack', domain: a.domain, under: a.under, since: a.since, reason: a.reason };
        if (this.known.attack.get(a.domain) !== attackJson(d)) out.push(d);
      }
      this.needResync = false;
      if (out.length) this.log.info({ decisions: out.length }, 'redis: caught up with decisions made while cut off');
      for (const d of out) this.deliver(d);
    } catch (err) {
      this.log.warn({ err: String(err) }, 'redis: resync failed, retried on reconnect');
    } finally {
      const held = this.held ?? [];
      this.held = null;
      this.resyncing = false;
      for (const d of held) this.deliver(d);
      if (this.needResync && this.healthy) setTimeout(() => { if (this.healthy && this.needResync) void this.resync(); }, 500).unref();
      this.scheduleFlush();
    }
  }

  private onMessage(msg: string): void {
    const m = parse<{ node: string; ds: Decision[] }>(msg);
    if (!m || m.node === this.nodeId || !Array.isArray(m.ds)) return;
    for (const d of m.ds) {
      if (this.held) this.held.push(d);
      else this.deliver(d);
    }
  }

  private deliver(d: Decision): void {
    this.remember(d);
    for (const fn of this.subscribers) {
      try { fn(d); } catch (err) { this.log.warn({ err: String(err), kind: d.kind }, 'redis: a subscriber threw'); }
    }
  }

  private remember(d: Decision): void {
    switch (d.kind) {
      case 'ban': this.known.bans.set(d.entry.ip, d.entry); break;
      case 'unban': this.known.bans.delete(d.ip); break;
      case 'whitelist': this.known.wl.set(d.entry.ip, d.entry); break;
      case 'unwhitelist': this.known.wl.delete(d.ip); break;
      case 'attack': this.known.attack.set(d.domain, attackJson(d)); break;
    }
  }

  private forgetExpired(now: number): void {
    for (const [ip, e] of this.known.bans) if (e.expiresAt <= now) this.known.bans.delete(ip);
  }
}

const sameBan = (a: BanEntry | undefined, b: BanEntry): boolean =>
  !!a && a.reason === b.reason && a.rule === b.rule && a.since === b.since && a.expiresAt === b.expiresAt;
const sameWl = (a: WhitelistEntry | undefined, b: WhitelistEntry): boolean =>
  !!a && a.origin === b.origin && a.note === b.note && a.since === b.since;

const attackJson = (d: Extract<Decision, { kind: 'attack' }>): string => JSON.stringify({ under: d.under, since: d.since, reason: d.reason });

function parse<T>(s: string): T | null {
  try { return JSON.parse(s) as T; } catch { return null; }
}
