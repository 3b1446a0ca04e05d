// The filter as the rest of the proxy sees it: detection (Detector) and what
// it decided (Decisions) behind one object, with the periodic work (ban
// expiry, attack-mode steps, saving) in tick(). The flow asks the detector;
// operators, statistics and the dashboard read and act through here.
import type { TokenSpread } from '../challenge/cookie.ts';
import type net from 'node:net';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import type { FilterStore } from '../store/filter-store.ts';
import { banPolicy, type Decisions } from '../decisions/decisions.ts';
import type { BanEntry } from '../decisions/blacklist.ts';
import type { ParsedRange, WhitelistEntry } from '../decisions/lists.ts';
import type { AttackState } from './attack-mode.ts';
import type { Detector } from './detector.ts';
import { sharedOptions } from './shared-address.ts';

/** A fair-share ban's base time (the blacklist clamps and grows it like any other): as long as a flood's. */
const FAIR_SHARE_BAN_SECONDS = 1800;

/** What statistics and the dashboard read from the filter. */
export interface FilterSnapshot {
  blacklistSize: number;
  /** Domains currently in attack mode. */
  underAttack: string[];
  /** Connections from banned sources refused (at accept, or just after). */
  droppedConnections: number;
  /** Every monotonic counter by name (bans by rule, challenges, ...), for the API and tests. */
  counters: Record<string, number>;
}

export interface FilterParts {
  detector: Detector;
  decisions: Decisions;
  store: FilterStore;
  log: Logger;
  now: () => number;
  mode: Config['filter']['mode'];
  /** Where each challenge token was used from (the cookie challenge's): a worker of several links it to its primary. */
  tokens?: TokenSpread;
}

export class Filter {
  readonly detector: Detector;
  readonly decisions: Decisions;
  readonly tokens: TokenSpread | null;
  private readonly store: FilterStore;
  private readonly log: Logger;
  private readonly now: () => number;
  private lastFlush: number;
  private mode: Config['filter']['mode'];

  constructor(p: FilterParts) {
    this.detector = p.detector;
    this.decisions = p.decisions;
    this.tokens = p.tokens ?? null;
    this.store = p.store;
    this.log = p.log;
    this.now = p.now;
    this.lastFlush = p.now();
    this.mode = p.mode;
  }

  get blockList(): net.BlockList { return this.decisions.blacklist.blockList; }
  rank(source: string): number { return this.detector.rank(source); }
  banOf(source: string): BanEntry | undefined { return this.decisions.banOf(source); }
  bans(): BanEntry[] { return this.decisions.bans(); }
  attackState(domain: string): Readonly<AttackState> | undefined { return this.detector.knowledge.peek(domain)?.traffic.state; }

  // Operator actions (admin API): the clock is the filter's.
  manualBan(source: string, ttlSeconds: number, reason: string): BanEntry {
    this.detector.forget(source);
    return this.decisions.manualBan(source, ttlSeconds, reason, this.now());
  }
  unban(source: string): boolean { return this.decisions.unban(source, this.now()); }
  isWhitelistedSource(source: string): boolean { return this.decisions.isWhitelisted(source); }
  whitelistEntries(): WhitelistEntry[] { return this.decisions.whitelistEntries(); }
  whitelistEntry(text: string): WhitelistEntry | undefined { return this.decisions.whitelistEntry(text); }
  addWhitelist(range: ParsedRange, note: string): WhitelistEntry { return this.decisions.addWhitelist(range, note, this.now()); }
  removeWhitelist(text: string): boolean { return this.decisions.removeWhitelist(text, this.now()); }

  /**
   * A source persistently over its share of a saturated origin (limits/origin-guard.ts): banned like a rule that is
   * enforced in attack — never in mode off, in auto only while the domain is under attack; never a whitelisted one.
   * Whatever its headers and cookies: taking the origin from everyone else is the offence.
   */
  banOverShare(source: string, domain: string, reason: string): boolean {
    if (this.mode === 'off' || this.decisions.has(source) || this.decisions.isWhitelisted(source)) return false;
    if (this.mode === 'auto' && this.attackState(domain)?.under !== true) return false;
    this.detector.forget(source);
    this.decisions.ban(source, 'fair-share', reason, FAIR_SHARE_BAN_SECONDS, this.now());
    return true;
  }

  snapshot(): FilterSnapshot {
    const c = this.detector.counters;
    const droppedConnections = c.droppedConnections + this.decisions.blacklist.tally.refused;
    const counters: Record<string, number> = { ...c, droppedConnections, sourcesTracked: this.detector.sourcesTracked, sourcesEvicted: this.detector.sourcesEvicted };
    counters.bans = this.decisions.bansTotal;
    counters.bansExpired = this.decisions.bansExpired;
    counters.bansEvicted = this.decisions.bansEvicted;
    for (const [rule, n] of this.decisions.bansByRule) counters['bans.' + rule] = n;
    return { blacklistSize: this.decisions.size, underAttack: this.detector.knowledge.underAttack(), droppedConnections, counters };
  }

  /** The periodic work; a timer at the edge calls it every 250 ms. */
  tick(): void {
    const now = this.now();
    // Cheap at every tick: the blacklist visits only the seconds that ended since (its expiry wheel).
    this.decisions.expire(now);
    this.detector.attacks.tick();
    if (now - this.lastFlush >= this.saveEveryMs) {
      // A store that fails (locked, full) is tried less often, up to every 30 s, and every second again once it takes.
      this.saveEveryMs = this.save() ? 1000 : Math.min(30_000, this.saveEveryMs * 2);
      this.lastFlush = this.now();
    }
  }
  private saveEveryMs = 1000;

  reconfigure(config: Config): void {
    const f = config.filter;
    this.mode = f.mode;
    this.detector.reconfigure(config);
    this.detector.shared.reconfigure(sharedOptions(config));
    this.decisions.reconfigure(banPolicy(f), f.whitelist, this.now());
  }

  /** Writes what is queued (periodically, at close, and right after a ban: app/edge.ts saveBansAtOnce); false when
   *  the store failed (logged; what was queued stays queued for the next save). */
  save(): boolean {
    try { this.store.flush(); return true; } catch (e) { this.log.error({ err: (e as Error).message }, 'filter state not saved; will retry'); return false; }
  }

  /** Saves what is queued, trying again for up to `retryMs` while the store refuses (a lock held elsewhere); false when
   *  it never took: the caller says so (a stop that lost state is not a clean one). */
  async close(retryMs = 2000): Promise<boolean> {
    this.detector.attacks.saveLearned(this.now());
    let saved = this.save();
    for (const end = performance.now() + retryMs; !saved && performance.now() < end;) {
      await new Promise((r) => setTimeout(r, 100));
      saved = this.save();
    }
    await this.decisions.close();
    return saved;
  }
}
