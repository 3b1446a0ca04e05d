// The blacklist: entries with a reason, a start and an expiry, and the one
// net.BlockList every listener consults at accept. The list holds no entries of
// its own: its check() looks the peer's source up in the bans (a Map), so a ban,
// an unban or an expiry is in force at the next accept, and the list is never
// rebuilt nor swapped. (It used to mirror the bans in Node's native lists: some
// 500–900 bytes of native memory a ban, and, as a BlockList cannot forget an
// address, a rebuild that held the accepting process 2.4 s with a million bans;
// `node bench/ban-memory.ts` measures both.)
// The bans are bounded (filter.maxBans): past it, those that would end soonest go
// first (soonestToGo), automatic before manual.
import net from 'node:net';
import { sourceKey } from '../listen/source.ts';
import { soonestToGo } from './ban-cap.ts';

export interface BanEntry {
  /** The source key: an IPv4 address or an IPv6 /64. */
  ip: string;
  /** The rule (or "manual", "score", "suspect") and the values that tripped it. */
  reason: string;
  rule: string;
  since: number;
  expiresAt: number;
}

/**
 * A BlockList that asks `banned` and counts what it refuses.
 * Node consults `server.blockList.check()` at accept and emits no event for a refusal, so this is the only place
 * the connections dropped at accept can be counted, and it costs one increment. The address is checked as the
 * source it is (sourceKey): an IPv6 peer by its /64, an IPv4-mapped peer (::ffff:a.b.c.d, on a dual-stack listener)
 * as the IPv4 address, so a ban of ::/64 refuses no IPv4 client (a plain net.BlockList matched IPv4 peers against
 * IPv6 ranges over the mapped space).
 */
export class CountingBlockList extends net.BlockList {
  private readonly tally: { refused: number };
  private readonly banned: (key: string) => boolean;
  constructor(tally: { refused: number }, banned: (key: string) => boolean) { super(); this.tally = tally; this.banned = banned; }

  override check(address: net.SocketAddress): boolean;
  override check(address: string, type?: net.IPVersion): boolean;
  override check(address: string | net.SocketAddress): boolean {
    const a = typeof address === 'string' ? address : address.address;
    const hit = this.banned(sourceKey(a));
    if (hit) this.tally.refused++;
    return hit;
  }

  // Its entries are the Blacklist's: one added here would never be consulted.
  override addAddress(): void { throw new Error('CountingBlockList: ban through the Blacklist'); }
  override addRange(): void { throw new Error('CountingBlockList: ban through the Blacklist'); }
  override addSubnet(): void { throw new Error('CountingBlockList: ban through the Blacklist'); }
}

/** Width of one slot of the expiry wheel (ms). */
const SLOT_MS = 1000;

export class Blacklist {
  private bans = new Map<string, BanEntry>();
  /** The keys ending in each second: an expiry visits only what ends, not every ban (a pass over half a million held
   *  the accepting process ~40 ms, every second bans ended). A key lifted or replaced early stays in its slot until
   *  the slot is swept or the wheel rebuilt (its entry decides); `wheeled` counts them all. */
  private wheel = new Map<number, string[]>();
  private wheeled = 0;
  /** Every slot up to this one has been swept. */
  private swept = -Infinity;
  /** Most entries held at once (filter.maxBans). */
  maxEntries: number;
  /** Connections refused at accept. */
  readonly tally = { refused: 0 };
  /** Every ban's key is a source key (an IPv4 address, an IPv6 /64): the peer's is the one to look up. */
  readonly blockList: net.BlockList = new CountingBlockList(this.tally, (key) => this.bans.has(key));

  constructor(maxEntries = Infinity) { this.maxEntries = maxEntries; }

  has(source: string): boolean { return this.bans.has(source); }
  get(source: string): BanEntry | undefined { return this.bans.get(source); }
  get size(): number { return this.bans.size; }
  all(): BanEntry[] { return [...this.bans.values()]; }

  /** Adds or replaces an entry; true when the source was not banned before. Past maxEntries, see trim(). */
  add(e: BanEntry): boolean {
    const fresh = !this.bans.has(e.ip);
    this.bans.set(e.ip, e);
    this.enter(e);
    // Keys of lifted and replaced bans would pile up in the wheel under a flood the cap trims: rebuilt from the live
    // bans once they are as many as those, each add paying its share.
    if (this.wheeled > 2 * this.bans.size + 1024) this.rewheel();
    return fresh;
  }

  remove(source: string): boolean { return this.bans.delete(source); }

  /** Removes several entries; returns the ones that were there. */
  removeAll(sources: Iterable<string>): string[] {
    const gone: string[] = [];
    for (const s of sources) if (this.bans.delete(s)) gone.push(s);
    return gone;
  }

  /**
   * Over maxEntries: lifts the entries that would end soonest (automatic ones first), and a hundredth of the cap more,
   * so that a flood of new bans pays one pass over the list per hundredth, not one per ban. Returns the lifted.
   */
  trim(): BanEntry[] {
    if (this.bans.size <= this.maxEntries) return [];
    const n = this.bans.size - this.maxEntries + Math.floor(this.maxEntries / 100);
    const gone = soonestToGo(this.wheel, this.bans, n, SLOT_MS);
    let last = -Infinity;
    for (const e of gone) { this.bans.delete(e.ip); last = Math.max(last, Math.ceil(e.expiresAt / SLOT_MS)); }
    // The seconds it read from hold the keys of what went: taken out now, or the next trim would read past them all
    // again (a flood trimmed 5,000 at a time cost 10–15 µs a ban, not 3).
    for (const [slot, keys] of this.wheel) {
      if (slot > last) continue;
      const live = keys.filter((k) => { const e = this.bans.get(k); return e !== undefined && Math.ceil(e.expiresAt / SLOT_MS) <= slot; });
      this.wheeled -= keys.length - live.length;
      if (live.length) this.wheel.set(slot, live); else this.wheel.delete(slot);
    }
    return gone;
  }

  /**
   * Drops the entries ended by `now`, visiting only the slots (seconds) that ended since the last call; returns them.
   * A ban is lifted at the first whole second at or after its end: up to a second late, as the filter's tick (once a
   * second with many bans) already had it, and never a rescan of a second's bans at every call.
   */
  expire(now: number): BanEntry[] {
    const gone: BanEntry[] = [];
    const upTo = Math.floor(now / SLOT_MS);
    // The clock went back (a correction after a wrong start): the ends entered since were put no earlier than the
    // seconds already swept, and would be lifted up to that far early; the wheel is laid out again from now.
    if (upTo < this.swept) { this.swept = upTo; this.rewheel(); }
    // Ends entered after their second was swept (a ban taken from elsewhere, already over) wait in the last swept slot.
    this.sweep(this.swept, Math.max(upTo, this.swept) * SLOT_MS, gone);
    if (upTo <= this.swept) return gone;
    // The seconds since the last sweep, or, after a leap of the clock longer than the wheel, the wheel's own slots.
    const due = upTo - this.swept <= this.wheel.size ? seconds(this.swept + 1, upTo) : [...this.wheel.keys()].filter((k) => k <= upTo);
    for (const k of due) this.sweep(k, upTo * SLOT_MS, gone);
    this.swept = upTo;
    return gone;
  }

  /** Lifts the bans of one slot ended by `end`; a key whose ban was lifted, or replaced with a later end (its key sits
   *  in that slot too), is passed over. */
  private sweep(slot: number, end: number, gone: BanEntry[]): void {
    const keys = this.wheel.get(slot);
    if (!keys) return;
    this.wheel.delete(slot);
    this.wheeled -= keys.length;
    for (const key of keys) {
      const e = this.bans.get(key);
      if (e && e.expiresAt <= end) { this.bans.delete(key); gone.push(e); }
    }
  }

  private enter(e: BanEntry): void {
    // An end in a second already swept (a ban taken from elsewhere, already over): in the last swept slot, which the
    // next expire() sweeps first.
    const slot = Math.max(Math.ceil(e.expiresAt / SLOT_MS), this.swept);
    const keys = this.wheel.get(slot);
    if (keys) keys.push(e.ip); else this.wheel.set(slot, [e.ip]);
    this.wheeled++;
  }

  private rewheel(): void {
    this.wheel = new Map();
    this.wheeled = 0;
    for (const e of this.bans.values()) this.enter(e);
  }
}

/** The seconds from..to (both included). */
function seconds(from: number, to: number): number[] {
  const out: number[] = [];
  for (let k = from; k <= to; k++) out.push(k);
  return out;
}
