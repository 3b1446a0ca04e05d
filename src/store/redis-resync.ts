// Catching up after a cut. A RedisBus remembers what it knows to be in force
// (published here, received, or read in a snapshot); when the connection comes
// back, what Redis holds is compared with that and only the difference is
// delivered, as ordinary decisions. The same memory answers snapshot() while
// Redis is away and, when Redis returns empty, is written back to rebuild it.
// Kept apart from RedisBus so the diff can be read (and reasoned about) without
// the connection handling around it.
import crypto from 'node:crypto';
import type { Redis } from 'ioredis';
import type { BanEntry } from '../decisions/blacklist.ts';
import type { WhitelistEntry } from '../decisions/lists.ts';
import type { Decision } from '../decisions/bus.ts';
import { GONE_KEPT_MS, GONE_MAX, PRUNE_LUA, attackJson, parse, parseState, pendingKey, type AttackState, type RedisKeys, type RedisSnapshot } from './redis-keys.ts';

/** What one node knows is in force: the base a resync diffs against. */
export class Known {
  readonly bans = new Map<string, BanEntry>();
  readonly wl = new Map<string, WhitelistEntry>();
  /** domain → attackJson (a string, so "changed?" is one comparison). */
  readonly attack = new Map<string, string>();
  /** Liftings (unban, unwhitelist) by pendingKey → when made, oldest first: written back when Redis lost its data, so
   *  that a node stopped meanwhile does not bring back, from its own store, what was lifted while it was away. Kept as
   *  long as Redis keeps them (GONE_KEPT_MS), the latest GONE_HELD. */
  readonly gone = new Map<string, number>();

  constructor(from?: { bans: BanEntry[]; whitelist: WhitelistEntry[] }) { if (from) this.adopt({ ...from, attacks: [] }); }

  remember(d: Decision): void {
    switch (d.kind) {
      case 'ban': this.bans.set(d.entry.ip, d.entry); this.superseded(`b:${d.entry.ip}`, d.entry.since); break;
      case 'unban': this.bans.delete(d.ip); this.lifted(`b:${d.ip}`, d.at); break;
      case 'whitelist': this.wl.set(d.entry.ip, d.entry); this.superseded(`w:${d.entry.ip}`, d.entry.since); break;
      case 'unwhitelist': this.wl.delete(d.ip); this.lifted(`w:${d.ip}`, d.at); break;
      case 'attack': this.attack.set(d.domain, attackJson(d)); break;
    }
  }

  /** A lifting made here or heard of; one with no time (a catch-up's) says nothing another node could be older than. */
  private lifted(key: string, at: number | undefined): void {
    if (at === undefined) return;
    this.gone.delete(key);
    this.gone.set(key, at);
    if (this.gone.size > GONE_HELD) this.gone.delete(this.gone.keys().next().value!);
  }

  /** A decision made since the lifting replaces it; an older one (a stale write-back) leaves it remembered. */
  private superseded(key: string, since: number): void { const at = this.gone.get(key); if (at !== undefined && since >= at) this.gone.delete(key); }

  /** The liftings still remembered, as decisions (to write back into a Redis that lost its data). */
  liftings(now: number): Decision[] {
    const out: Decision[] = [];
    for (const [key, at] of this.gone) if (at > now - GONE_KEPT_MS) out.push({ kind: key[0] === 'b' ? 'unban' : 'unwhitelist', ip: key.slice(2), at });
    return out;
  }

  /** What this node holds in force that `snap` lacks, as decisions (to write back: Redis lost it or never had it). */
  missingFrom(snap: RedisSnapshot, now: number): Decision[] {
    const bans = new Set(snap.bans.map((e) => e.ip)), wl = new Set(snap.whitelist.map((e) => e.ip));
    const out: Decision[] = [];
    // A part Redis could not give (a key of the wrong type) is unknown, not empty: nothing of it is missing.
    const unread = new Set(snap.unreadable ?? []);
    if (!unread.has('bans')) for (const e of this.bans.values()) if (!bans.has(e.ip) && e.expiresAt > now) out.push({ kind: 'ban', entry: e });
    if (!unread.has('whitelist')) for (const e of this.wl.values()) if (!wl.has(e.ip)) out.push({ kind: 'whitelist', entry: e });
    const attacks = new Set(snap.attacks.map((a) => a.domain));
    if (!unread.has('attacks')) for (const [domain, v] of this.attack) if (!attacks.has(domain)) out.push({ kind: 'attack', domain, ...parse<Omit<AttackState, 'domain'>>(v)! });
    return out;
  }

  /** A snapshot the caller puts in force becomes what this node knows. */
  adopt(snap: RedisSnapshot): void {
    for (const e of snap.bans) this.bans.set(e.ip, e);
    for (const e of snap.whitelist) this.wl.set(e.ip, e);
    for (const a of snap.attacks) this.attack.set(a.domain, attackJson({ kind: 'attack', ...a }));
  }

  forgetExpired(now: number): void {
    for (const [ip, e] of this.bans) if (e.expiresAt <= now) this.bans.delete(ip);
    for (const [key, at] of this.gone) if (at <= now - GONE_KEPT_MS) this.gone.delete(key);
  }

  /** What this node knows, as a snapshot (Redis out of reach). */
  snapshot(now: number): RedisSnapshot {
    const out: RedisSnapshot = { bans: [], whitelist: [], attacks: [] };
    for (const e of this.bans.values()) if (e.expiresAt > now) out.bans.push(e);
    for (const e of this.wl.values()) out.whitelist.push(e);
    for (const [domain, v] of this.attack) out.attacks.push({ domain, ...parse<Omit<AttackState, 'domain'>>(v)! });
    return out;
  }

  /** The decisions that turn what this node knows into what Redis holds (`snap`). A ban known here that expired
   *  by itself is not unbanned: every node lets it run out on its own. An address with a decision of this node
   *  that Redis cannot hold yet (`queued`, by pendingKey: waiting to be written, made while the snapshot was read,
   *  or dropped from a full queue) is left as it is here: its absence from the snapshot is no decision of another
   *  node. */
  diff(snap: RedisSnapshot, now: number, queued: (key: string) => boolean = () => false): Decision[] {
    const out: Decision[] = [];
    for (const _ of this.diffing(snap, now, queued, out)) { /* at once */ }
    return out;
  }

  /** diff() with `pause()` (a turn of the event loop) every SCAN_COUNT entries compared: a catch-up while the node
   *  serves (100,000 bans compared at once kept it waiting some 25 ms). Nothing read is lost between steps: messages
   *  are held during a catch-up, and a decision this node makes meanwhile is queued (`queued`, and the delivery's
   *  check). */
  async diffInSteps(snap: RedisSnapshot, now: number, queued: (key: string) => boolean, pause: () => Promise<void>): Promise<Decision[]> {
    const out: Decision[] = [];
    for (const _ of this.diffing(snap, now, queued, out)) await pause();
    return out;
  }

  /** The diff into `out`, yielding every SCAN_COUNT entries compared. */
  private *diffing(snap: RedisSnapshot, now: number, queued: (key: string) => boolean, out: Decision[]): Generator<void> {
    let n = 0;
    const known = (part: 'bans' | 'whitelist' | 'attacks') => !snap.unreadable?.includes(part);
    const seenBans = new Set<string>();
    for (const e of snap.bans) {
      seenBans.add(e.ip);
      if (!queued(`b:${e.ip}`) && !sameBan(this.bans.get(e.ip), e)) out.push({ kind: 'ban', entry: e });
      if (++n % SCAN_COUNT === 0) yield;
    }
    if (known('bans')) {
      for (const [ip, e] of this.bans) {
        if (!seenBans.has(ip) && e.expiresAt > now && !queued(`b:${ip}`)) out.push({ kind: 'unban', ip });
        if (++n % SCAN_COUNT === 0) yield;
      }
    }
    const seenWl = new Set<string>();
    for (const e of snap.whitelist) {
      seenWl.add(e.ip);
      if (!queued(`w:${e.ip}`) && !sameWl(this.wl.get(e.ip), e)) out.push({ kind: 'whitelist', entry: e });
    }
    if (known('whitelist')) for (const ip of this.wl.keys()) if (!seenWl.has(ip) && !queued(`w:${ip}`)) out.push({ kind: 'unwhitelist', ip });
    for (const a of snap.attacks) {
      const d: Decision = { kind: 'attack', ...a };
      if (!queued(`a:${a.domain}`) && this.attack.get(a.domain) !== attackJson(d)) out.push(d);
    }
  }
}

/** Liftings a node remembers for a write-back (about 100 bytes each): an operator's, and a whitelist's lifting of
 *  the bans it covers, are few; a flood of unbans past this keeps the latest. */
const GONE_HELD = 100_000;

const sameBan = (a: BanEntry | undefined, b: BanEntry): boolean =>
  !!a && a.reason === b.reason && a.rule === b.rule && a.since === b.since && a.expiresAt === b.expiresAt;
const sameWl = (a: WhitelistEntry | undefined, b: WhitelistEntry): boolean =>
  !!a && a.origin === b.origin && a.note === b.note && a.since === b.since;

/** Deletes the bans that ran out (in bounded steps: PRUNE_LUA). */
export async function pruneBans(cmd: Redis, k: RedisKeys, now: number, goneMax = GONE_MAX): Promise<void> {
  await cmd.eval(PRUNE_LUA, 3, k.bans, k.exp, k.gone, String(now), String(now - GONE_KEPT_MS), String(goneMax));
}

/** Entries read (and parsed), and decisions delivered, per step of a catch-up. */
export const SCAN_COUNT = 2000;
/** A turn of the event loop: what the node serves goes on between the steps of a catch-up. */
export const pause = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Delivers a catch-up's decisions in steps; a decision this node made meanwhile on the same address or domain
 *  (`holds`: queued, as flushes wait for the catch-up) stands over what the catch-up read before it. */
export async function deliverInSteps(out: Decision[], holds: (key: string) => boolean, deliver: (d: Decision) => void, stopped: () => boolean): Promise<void> {
  for (let i = 0; i < out.length && !stopped(); i++) {
    if (!holds(pendingKey(out[i]))) deliver(out[i]);
    if (i % SCAN_COUNT === SCAN_COUNT - 1) await pause();
  }
}

/**
 * What is in force in Redis now: the bans that ran out are pruned first. With `pause` (a catch-up while the node
 * serves), each hash is read with HSCAN, SCAN_COUNT entries a step, parsed as it comes, with `pause()` (a turn of the
 * event loop) between steps: 100,000 bans read and parsed at once kept the event loop waiting some 180 ms. An entry
 * changed meanwhile is also a message on the channel, which the bus holds during a catch-up and delivers after it.
 */
export async function readState(cmd: Redis, k: RedisKeys, now: number, pause?: () => Promise<void>, epoch?: string | null): Promise<RedisSnapshot> {
  await pruneBans(cmd, k, now).catch(() => {});
  const snap: RedisSnapshot = { bans: [], whitelist: [], attacks: [] };
  const unreadable: NonNullable<RedisSnapshot['unreadable']> = [];
  // A hash Redis cannot give (a key of the wrong type, written by a person or another program) is unknown, not
  // empty: read as empty, the catch-up would lift everything of its kind on this node. The others are read.
  const read = async (key: string, part: 'bans' | 'whitelist' | 'attacks', take: (chunk: Record<string, string>) => void) => {
    try {
      if (!pause) { take(await cmd.hgetall(key)); return; }
      let cursor = '0';
      do {
        const [next, flat] = await cmd.hscan(key, cursor, 'COUNT', SCAN_COUNT);
        const chunk: Record<string, string> = {};
        for (let i = 0; i + 1 < flat.length; i += 2) chunk[flat[i]] = flat[i + 1];
        take(chunk);
        cursor = next;
        await pause();
      } while (cursor !== '0');
    } catch (e) {
      if (!/WRONGTYPE/.test(String(e))) throw e;
      unreadable.push(part);
    }
  };
  // HSCAN may return an entry twice: kept once, by key.
  const bans = new Map<string, BanEntry>(), wl = new Map<string, WhitelistEntry>(), attacks = new Map<string, AttackState>();
  await read(k.bans, 'bans', (c) => { for (const e of parseState(c, {}, {}, now).bans) bans.set(e.ip, e); });
  await read(k.wl, 'whitelist', (c) => { for (const e of parseState({}, c, {}, now).whitelist) wl.set(e.ip, e); });
  await read(k.attack, 'attacks', (c) => { for (const a of parseState({}, {}, c, now).attacks) attacks.set(a.domain, a); });
  // Emptied while read in steps (FLUSHALL, a restart): what was read is no state at all (the caller catches up again,
  // as after a wipe), not a cluster that lifted everything.
  if (epoch && (await cmd.get(k.epoch)) !== epoch) throw new Error('Redis lost its data while it was read');
  snap.bans = [...bans.values()];
  snap.whitelist = [...wl.values()];
  snap.attacks = [...attacks.values()];
  if (unreadable.length) snap.unreadable = unreadable;
  return snap;
}

/** Reads Redis's epoch (setting one if there is none). `wiped` is true when it differs from `prev`, the one this
 *  bus saw last: Redis lost its data in between. */
export async function checkEpoch(cmd: Redis, key: string, prev: string | null): Promise<{ epoch: string | null; wiped: boolean }> {
  // Read first: this runs every heartbeat, and a write would fail each time on a Redis that refuses writes.
  let cur = await cmd.get(key);
  if (cur === null) { await cmd.set(key, crypto.randomBytes(8).toString('hex'), 'NX'); cur = await cmd.get(key); }
  return { epoch: cur, wiped: prev !== null && cur !== prev };
}
