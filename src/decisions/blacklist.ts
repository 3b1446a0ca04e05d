// The blacklist: entries with a reason, a start and an expiry, mirrored into
// the net.BlockList every listener consults at accept. A new ban is simply
// added to the live list. A BlockList cannot forget an address, and building a
// fresh one costs some 6 µs a ban (0.6 s for 100,000: with bans expiring every
// second, a rebuild per unban or expiry held the accepting process most of the
// time). So a lifted entry stays in the list, and a match is confirmed against
// the live bans (only a match: a refused or lifted source, never a clean one);
// the list is rebuilt, and handed to the listeners (setBlockList), once as many
// entries were lifted as are live, so each removal pays its share of one.
import net from 'node:net';
import { blockTarget } from './lists.ts';
import { sourceKey } from '../listen/source.ts';

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
 * A BlockList that counts what it refuses, and keeps the two families apart.
 * Node consults `server.blockList.check()` at accept and emits no event for a refusal, so this is the only place
 * the connections dropped at accept can be counted, and it costs one increment. A plain net.BlockList matches an
 * IPv4 peer against IPv6 ranges over the IPv4-mapped space: the ban of ::1 (the source ::/64) dropped every IPv4
 * client. Here each family has its own list, and an IPv4-mapped peer (::ffff:a.b.c.d, on a dual-stack listener) is
 * checked as the IPv4 address it is.
 */
export class CountingBlockList extends net.BlockList {
  private readonly tally: { refused: number };
  private readonly v4 = new net.BlockList();
  private readonly v6 = new net.BlockList();
  /** Confirms a match (the address as checked): false when the entry it matched was lifted since the list was built. */
  private readonly live: ((address: string) => boolean) | null;
  constructor(tally: { refused: number }, live: ((address: string) => boolean) | null = null) { super(); this.tally = tally; this.live = live; }

  private of(type: net.IPVersion | undefined): net.BlockList { return type === 'ipv6' ? this.v6 : this.v4; }

  override addAddress(address: string | net.SocketAddress, type?: net.IPVersion): void {
    if (typeof address === 'string') this.of(type).addAddress(address, type);
    else this.of(address.family).addAddress(address);
  }

  override addRange(start: string | net.SocketAddress, end: string | net.SocketAddress, type?: net.IPVersion): void {
    const family = typeof start === 'string' ? type : start.family;
    this.of(family).addRange(start as string, end as string, family);
  }

  override addSubnet(net_: string | net.SocketAddress, prefix: number, type?: net.IPVersion): void {
    if (typeof net_ === 'string') this.of(type).addSubnet(net_, prefix, type);
    else this.of(net_.family).addSubnet(net_, prefix);
  }

  override check(address: net.SocketAddress): boolean;
  override check(address: string, type?: net.IPVersion): boolean;
  override check(address: string | net.SocketAddress, type?: net.IPVersion): boolean {
    let a = typeof address === 'string' ? address : address.address;
    let family: net.IPVersion = typeof address === 'string' ? (type ?? (net.isIPv6(a) ? 'ipv6' : 'ipv4')) : address.family;
    if (family === 'ipv6' && a.startsWith('::ffff:') && a.includes('.')) { a = a.slice(7); family = 'ipv4'; }
    const hit = this.of(family).check(a, family) && (this.live === null || this.live(a));
    if (hit) this.tally.refused++;
    return hit;
  }

  /** What the lists hold, both families (for inspection; net.BlockList's own `rules` would be empty). */
  allRules(): string[] { return [...this.v4.rules, ...this.v6.rules]; }
}

/** Lifted entries a list may keep before it is rebuilt, however few bans are live (a rebuild of a few is cheap). */
const MIN_LIFTED = 256;

export class Blacklist {
  private bans = new Map<string, BanEntry>();
  private nextExpiry = Infinity;
  /** Entries lifted (unbans, expiries) since the list in force was built: still in it, refused no more. */
  private lifted = 0;
  /** Connections refused at accept, across every list this blacklist has installed. */
  readonly tally = { refused: 0 };
  /** A match of the list is a ban in force: the source's own entry (an IPv4 address, an IPv6 /64), or an address
   *  banned as it is (a key that is no address of either form). */
  private readonly live = (address: string): boolean => this.bans.has(sourceKey(address)) || this.bans.has(address);
  blockList: net.BlockList = new CountingBlockList(this.tally, this.live);
  private readonly install: (list: net.BlockList) => void;

  constructor(install: (list: net.BlockList) => void) { this.install = install; }

  has(source: string): boolean { return this.bans.has(source); }
  get(source: string): BanEntry | undefined { return this.bans.get(source); }
  get size(): number { return this.bans.size; }
  all(): BanEntry[] { return [...this.bans.values()]; }

  /** Adds or replaces an entry; true when the source was not banned before. */
  add(e: BanEntry): boolean {
    const fresh = !this.bans.has(e.ip);
    this.bans.set(e.ip, e);
    if (e.expiresAt < this.nextExpiry) this.nextExpiry = e.expiresAt;
    if (fresh) {
      const t = blockTarget(e.ip);
      if (t) t.prefix === 128 || t.prefix === 32 ? this.blockList.addAddress(t.address, t.type) : this.blockList.addSubnet(t.address, t.prefix, t.type);
    }
    return fresh;
  }

  remove(source: string): boolean {
    if (!this.bans.delete(source)) return false;
    this.lift(1);
    return true;
  }

  /** Removes several entries (a rebuild per entry was quadratic: a whitelisted range over thousands of bans held the
   *  loop for minutes); returns the ones that were there. */
  removeAll(sources: Iterable<string>): string[] {
    const gone: string[] = [];
    for (const s of sources) if (this.bans.delete(s)) gone.push(s);
    if (gone.length) this.lift(gone.length);
    return gone;
  }

  /** n entries left the bans: refused no more at once (the list confirms its matches); rebuilt once enough did. */
  private lift(n: number): void {
    this.lifted += n;
    if (this.lifted >= Math.max(MIN_LIFTED, this.bans.size)) this.rebuild();
  }

  /** Drops expired entries (cheap when none is due); returns the expired ones. */
  expire(now: number): BanEntry[] {
    if (now < this.nextExpiry) return [];
    const gone: BanEntry[] = [];
    let next = Infinity;
    for (const [k, e] of this.bans) {
      if (e.expiresAt <= now) { this.bans.delete(k); gone.push(e); } else if (e.expiresAt < next) next = e.expiresAt;
    }
    this.nextExpiry = next;
    if (gone.length) this.lift(gone.length);
    return gone;
  }

  private rebuild(): void {
    this.lifted = 0;
    const list = new CountingBlockList(this.tally, this.live);
    let next = Infinity;
    for (const e of this.bans.values()) {
      const t = blockTarget(e.ip);
      if (t) t.prefix === 128 || t.prefix === 32 ? list.addAddress(t.address, t.type) : list.addSubnet(t.address, t.prefix, t.type);
      if (e.expiresAt < next) next = e.expiresAt;
    }
    this.nextExpiry = next;
    this.blockList = list;
    this.install(list);
  }
}
