// Decisions: who is banned (until when, and why), who is whitelisted, and the
// repeat-offender records that make a ban grow. Detection decides *that* a
// source must go; this module is the one place that records it, persists it,
// tells the listeners (accept-time drop, open connections closed) and the
// other processes and nodes (the DecisionBus). Time is passed in.
import type { Config } from '../config/schema.ts';
import type { FilterStore } from '../store/filter-store.ts';
import type { Logger } from '../log.ts';
import { Blacklist, type BanEntry } from './blacklist.ts';
import { parseWhitelistEntry, Whitelist, type ParsedRange, type WhitelistEntry } from './lists.ts';
import { banDurationMs, decayedOffences, recordOffence, type OffenderRecord } from './ban-time.ts';
import { LocalBus, type Decision, type DecisionBus } from './bus.ts';
import { LRUCache } from 'lru-cache';

export interface BanPolicy {
  repeatGrowth: number;
  repeatHalfLifeHours: number;
  timeScale: number;
  maxSources: number;
  /** Most bans held at once (filter.maxBans): past it, those ending soonest are lifted early. None: no cap. */
  maxBans?: number;
}

/** The ban policy of the config's filter section. */
export function banPolicy(f: Pick<Config['filter'], 'repeatGrowth' | 'repeatHalfLifeHours' | 'timeScale' | 'maxSources' | 'maxBans'>): BanPolicy {
  return { repeatGrowth: f.repeatGrowth, repeatHalfLifeHours: f.repeatHalfLifeHours, timeScale: f.timeScale, maxSources: f.maxSources, maxBans: f.maxBans };
}

export interface DecisionsDeps {
  store: FilterStore;
  log: Logger;
  bus?: DecisionBus;
}

/** The edge, told of what was decided: a banned source's open connections go at once (the accept-time drop needs no
 *  telling: the listeners' BlockList looks the blacklist up). */
export interface DecisionWatcher {
  onBan?(source: string): void;
  /** Another node found a domain under attack (`at`: when it said so last). */
  onRemoteAttack?(domain: string, under: boolean, since: number, reason: string | null, at?: number, failing?: boolean): void;
}

export class Decisions {
  readonly blacklist: Blacklist;
  readonly whitelist = new Whitelist();
  private readonly offenders: LRUCache<string, OffenderRecord>;
  private readonly deps: DecisionsDeps;
  private readonly bus: DecisionBus;
  private readonly watchers: DecisionWatcher[] = [];
  private policy: BanPolicy;
  /** Monotonic counters for statistics. */
  bansTotal = 0;
  bansExpired = 0;
  /** Bans lifted early because the blacklist was full (filter.maxBans). */
  bansEvicted = 0;
  private evictionLoggedAt = -Infinity;
  private prunedAt = 0;
  /** When each recently unbanned source was unbanned (here or on another node): a ban decided before that, which a
   *  worker sends up only now, is not taken as new. */
  private readonly unbannedAt = new LRUCache<string, number>({ max: 10_000 });
  readonly bansByRule = new Map<string, number>();

  constructor(policy: BanPolicy, configWhitelist: string[], deps: DecisionsDeps, now: number) {
    this.policy = policy;
    this.deps = deps;
    this.bus = deps.bus ?? new LocalBus();
    this.blacklist = new Blacklist(policy.maxBans ?? Infinity);
    this.offenders = new LRUCache({ max: policy.maxSources });
    const store = deps.store;
    this.pruneOffenders(now);
    for (const [ip, r] of store.loadOffenders()) this.offenders.set(ip, r);
    this.whitelist.setConfigEntries(configWhitelist, now);
    this.whitelist.addAll(parsedEntries(store.loadWhitelist()), 'api');
    // A ban the whitelist covers is lifted for good, as a whitelist entry added while running lifts it: left in the
    // store, it came back at the first start after the entry was taken out again.
    let lifted = 0;
    for (const b of store.loadBans(now)) if (!this.whitelist.covers(b.ip)) this.blacklist.add(b); else { store.deleteBan(b.ip); lifted++; }
    this.trim(now);
    if (lifted) store.flush();
    this.bus.subscribe((d) => this.apply(d));
  }

  watch(w: DecisionWatcher): void { this.watchers.push(w); }
  private banned(source: string): void { for (const w of this.watchers) w.onBan?.(source); }

  reconfigure(policy: BanPolicy, configWhitelist: string[], now: number): void {
    this.policy = policy;
    this.blacklist.maxEntries = policy.maxBans ?? Infinity;
    this.whitelist.setConfigEntries(configWhitelist, now);
    this.liftWhitelisted();
    this.trim(now);
  }

  /**
   * Over filter.maxBans: the bans that would end soonest are lifted here (a flood of IPv6 /64s, each a source, must
   * not grow memory without end). Not a decision for the cluster: each node applies its own cap to the same bans, and
   * one with room keeps them (Redis too, for a node that starts with a larger cap). The bus is told all the same: what
   * it remembers of the cluster's bans forgets them, and a primary's workers lift them too.
   */
  private trim(now: number): void {
    const gone = this.blacklist.trim();
    if (!gone.length) return;
    for (const e of gone) this.deps.store.deleteBan(e.ip);
    this.bus.evicted?.(gone.map((e) => e.ip));
    this.bansEvicted += gone.length;
    if (now - this.evictionLoggedAt >= 60_000) {
      this.evictionLoggedAt = now;
      this.deps.log.warn({ lifted: gone.length, maxBans: this.policy.maxBans, liftedInAll: this.bansEvicted }, 'blacklist full (filter.maxBans): the bans ending soonest were lifted early');
    }
  }

  has(source: string): boolean { return this.blacklist.has(source); }
  banOf(source: string): BanEntry | undefined { return this.blacklist.get(source); }
  bans(): BanEntry[] { return this.blacklist.all(); }
  get size(): number { return this.blacklist.size; }

  /** Another worker's record of a repeat offender (the primary passes them on): kept unless this one's is later. */
  adoptOffender(source: string, r: OffenderRecord): void {
    const mine = this.offenders.get(source);
    if (!mine || r.lastBanAt >= mine.lastBanAt) this.offenders.set(source, r);
  }

  /**
   * An automatic ban: the time grows with the source's earlier (decayed) offences.
   * Returns the entry; the caller forgets the source's detection state.
   */
  ban(source: string, rule: string, reason: string, baseSeconds: number, now: number): BanEntry {
    const rec = this.offenders.get(source);
    const halfLife = this.halfLifeMs();
    const offences = decayedOffences(rec, now, halfLife);
    const ms = banDurationMs(baseSeconds, offences, { growth: this.policy.repeatGrowth, halfLifeMs: halfLife, timeScale: this.policy.timeScale });
    const next = recordOffence(rec, now, halfLife);
    this.offenders.set(source, next);
    this.deps.store.putOffender(source, next);
    const e = this.record({ ip: source, reason, rule, since: now, expiresAt: now + ms });
    this.deps.log.info({ source, rule, reason, banSeconds: Math.round(ms / 1000), offences: Math.round(offences * 100) / 100 }, 'source banned');
    return e;
  }

  /** An operator's ban: exactly the time asked; a shorter manual entry replaces a longer automatic one. */
  manualBan(source: string, ttlSeconds: number, reason: string, now: number): BanEntry {
    if (this.blacklist.has(source)) this.blacklist.remove(source);
    const e = this.record({ ip: source, reason, rule: 'manual', since: now, expiresAt: now + ttlSeconds * 1000 });
    this.saveNow();
    this.deps.log.info({ source, rule: 'manual', reason, banSeconds: ttlSeconds }, 'source banned');
    return e;
  }

  /** A ban decided by another process of this node (a worker): recorded, stored and published as if made here, unless
   *  the ban in force here was decided later: an operator's that crossed it on the way (the worker decided before it
   *  heard of it). The later decision stands, as at a join and in Redis (a tie keeps the one in force, as at a join),
   *  and the one kept, counted when it was made, is not counted again; the worker has it, or will, as every worker does. */
  adopt(e: BanEntry): void {
    const mine = this.blacklist.get(e.ip);
    if (mine && mine.since >= e.since) return;
    // An unban made after the worker decided (it had not heard of it): the later decision stands here too.
    // (A tie is taken: the ban then shows, and can be lifted again; refused, the worker would keep one nobody sees.)
    if ((this.unbannedAt.get(e.ip) ?? -Infinity) > e.since) return;
    if (!this.whitelist.covers(e.ip)) this.record(e);
  }

  /** An operator's change is saved at once (a kill -9 right after it keeps it). A store that refuses the write now (a
   *  lock held by another process, a full disk) does not undo it: it is in force and published, its write stays
   *  queued for the periodic save, and the operator is answered as it is, not with a 500 for a change in force. */
  private saveNow(): void {
    try { this.deps.store.flush(); } catch (e) {
      this.deps.log.warn({ err: (e as Error).message }, 'filter state not saved now (in force; saved with the next save)');
    }
  }

  /** The bookkeeping every ban shares, wherever it was decided. */
  private record(e: BanEntry): BanEntry {
    this.blacklist.add(e);
    this.deps.store.putBan(e);
    this.bansTotal++;
    this.bansByRule.set(e.rule, (this.bansByRule.get(e.rule) ?? 0) + 1);
    this.bus.publish({ kind: 'ban', entry: e });
    this.banned(e.ip);
    this.trim(e.since);
    return e;
  }

  /** An operator's unban; true when the source was banned here. Told to every process and node whether or not: one
   *  may hold a ban this process's cap (filter.maxBans) lifted early, and the operator means the source everywhere. */
  unban(source: string, now: number): boolean {
    this.unbannedAt.set(source, now);
    const ok = this.drop(source);
    this.bus.publish({ kind: 'unban', ip: source, at: now });
    this.saveNow();
    return ok;
  }

  private drop(source: string): boolean {
    const ok = this.blacklist.remove(source);
    if (ok) this.deps.store.deleteBan(source);
    return ok;
  }

  /** After 20 half-lives an offence weighs less than a millionth: forgotten by the store, at start and every hour (a
   *  proxy that runs for months under rotating floods would otherwise keep a row for every source it ever banned). */
  private pruneOffenders(now: number): void {
    this.prunedAt = now;
    this.deps.store.pruneOffenders(now - 20 * this.halfLifeMs());
  }

  /** Drops the bans that ran out (and, hourly, the offender records that no longer weigh). */
  expire(now: number): number {
    if (now - this.prunedAt >= 3600_000) this.pruneOffenders(now);
    const gone = this.blacklist.expire(now);
    for (const e of gone) this.deps.store.deleteBan(e.ip);
    this.bansExpired += gone.length;
    return gone.length;
  }

  whitelistEntries(): WhitelistEntry[] { return this.whitelist.all(); }
  whitelistEntry(text: string): WhitelistEntry | undefined { return this.whitelist.get(text); }
  isWhitelisted(source: string): boolean { return this.whitelist.covers(source); }

  addWhitelist(range: ParsedRange, note: string, now: number): WhitelistEntry {
    const e = this.whitelist.add(range, 'api', note, now);
    this.deps.store.putWhitelist({ ip: e.ip, origin: 'api', note, since: e.since });
    // The bans it lifts are lifted everywhere, in Redis too: left there, a node started later would ban the source
    // again once the whitelist entry is gone. The entry goes first: a process that takes it lifts them all at once
    // (one new BlockList), and the unbans that follow find nothing left to rebuild for.
    const lifted = this.liftWhitelisted();
    this.bus.publish({ kind: 'whitelist', entry: { ip: e.ip, origin: 'api', note, since: e.since } });
    for (const b of lifted) this.bus.publish({ kind: 'unban', ip: b.ip, at: now });
    this.saveNow();
    return e;
  }

  removeWhitelist(text: string, now: number): boolean {
    const ok = this.whitelist.remove(text);
    if (ok) { this.deps.store.deleteWhitelist(text); this.bus.publish({ kind: 'unwhitelist', ip: text, at: now }); this.saveNow(); }
    return ok;
  }

  /** Whitelisted sources are never blocked: lifts the bans the whitelist now covers; returns them. */
  private liftWhitelisted(): BanEntry[] {
    const lifted = this.blacklist.all().filter((b) => this.whitelist.covers(b.ip));
    this.blacklist.removeAll(lifted.map((b) => b.ip));
    for (const b of lifted) this.deps.store.deleteBan(b.ip);
    return lifted;
  }

  /** A decision made in another process or node: in force here too, without telling anyone again, and stored here
   *  as this node's own are (a restart while Redis is away starts from what was last in force, not from what this
   *  node alone had decided: a whitelist entry removed elsewhere must not come back from this node's store). */
  private apply(d: Decision): void {
    const store = this.deps.store;
    if (d.kind === 'ban') {
      // A ban that crossed a shared whitelist entry (made on two nodes at once, or while Redis was away): lifted in
      // Redis too, stamped no earlier than the ban, else a node started later would take it up from there.
      if (this.whitelist.covers(d.entry.ip)) { if (this.whitelist.coversShared(d.entry.ip)) this.bus.publish({ kind: 'unban', ip: d.entry.ip, at: d.entry.since }); return; }
      this.blacklist.add(d.entry);
      store.putBan(d.entry);
      this.banned(d.entry.ip);
      this.trim(d.entry.since);
    } else if (d.kind === 'unban') {
      if (d.at !== undefined && d.at > (this.unbannedAt.get(d.ip) ?? -Infinity)) this.unbannedAt.set(d.ip, d.at);
      if (this.blacklist.remove(d.ip)) store.deleteBan(d.ip);
    }
    else if (d.kind === 'whitelist') this.takeWhitelist([d.entry]);
    else if (d.kind === 'unwhitelist') { if (this.whitelist.remove(d.ip)) store.deleteWhitelist(d.ip); }
    else if (d.kind === 'attack') for (const w of this.watchers) w.onRemoteAttack?.(d.domain, d.under, d.since, d.reason, d.at, d.failing === true);
  }

  /** API whitelist entries decided elsewhere: in force, stored, and the bans they cover lifted (all in one go), in Redis
   *  too: the node that made the entry lifted only the bans it knew of (not one decided here meanwhile, or while Redis
   *  was away). Each unban is stamped with its ban's time, so that it is not older than the ban it lifts. */
  private takeWhitelist(entries: WhitelistEntry[]): void {
    for (const e of this.whitelist.addAll(parsedEntries(entries), 'api')) this.deps.store.putWhitelist(e);
    for (const b of this.liftWhitelisted()) this.bus.publish({ kind: 'unban', ip: b.ip, at: b.since });
  }

  /** Brings in what the cluster decided while this node was away (start, reconnect). */
  async join(now: number): Promise<void> {
    const snap = await this.bus.snapshot(now, { bans: this.blacklist.all(), whitelist: this.whitelist.all().filter((w) => w.origin === 'api') });
    this.takeWhitelist(snap.whitelist);
    // The later decision stands: a ban this node holds from before it stopped gives way to one decided since (a new
    // expiry or reason set on another node meanwhile), which the catch-up would not deliver again.
    for (const b of snap.bans) {
      const mine = this.blacklist.get(b.ip);
      if (b.expiresAt > now && (!mine || b.since > mine.since)) this.apply({ kind: 'ban', entry: b });
    }
    // A domain another node is filtering is filtered here from the start, not from the next change of its state (a
    // state not said again for a while, left by a node that stopped under attack, is not taken up: the detector).
    for (const a of snap.attacks ?? []) if (a.under) this.apply({ kind: 'attack', ...a });
  }

  get busHealthy(): boolean { return this.bus.healthy; }
  publishAttack(domain: string, under: boolean, since: number, reason: string | null, at: number, failing = false): void {
    this.bus.publish({ kind: 'attack', domain, under, since, reason, at, ...(failing ? { failing } : {}) });
  }

  private halfLifeMs(): number { return this.policy.repeatHalfLifeHours * 3600_000 * this.policy.timeScale; }

  async close(): Promise<void> { await this.bus.close(); }
}

/** Stored or received API whitelist entries as ranges; one that does not parse is skipped. */
function parsedEntries(entries: WhitelistEntry[]): { range: ParsedRange; note: string; since: number }[] {
  // A note missing from an entry written by hand (or another version) is an empty one: the store binds only text.
  return entries.flatMap((w) => { const p = parseWhitelistEntry(w.ip); return p.ok ? [{ range: p.value, note: typeof w.note === 'string' ? w.note : '', since: w.since }] : []; });
}
