// What detection knows of each domain: this second's traffic and its attack
// state, the paths it served as static, the usual body size of each path. Kept
// across restarts (FilterStore.putLearned), so a restarted proxy neither
// relearns the baseline nor learns an attack under way as normal.
import { LRUCache } from 'lru-cache';
import { DomainTraffic, restoreAttack, saveAttack, type AttackParams } from './attack-mode.ts';
import { BodySizes } from './body-sizes.ts';
import { hashRange } from './signals.ts';
import type { LearnedDomain } from '../store/filter-store.ts';

const PATHS_PER_DOMAIN = 4096;

export class DomainKnowledge {
  traffic: DomainTraffic;
  /** Paths (by hash) the domain served with a static Content-Type: they pass a challenge untouched. */
  readonly staticPaths = new LRUCache<number, true>({ max: PATHS_PER_DOMAIN });
  /** The usual request-body size of each path, for the oversized-body rule. */
  readonly bodySizes = new BodySizes(PATHS_PER_DOMAIN);
  /** What the domain's endpoints usually answered in, as the store gave it: the adaptive limit (limits/) checks and
   *  takes it when it is made, so that the records are read once at start. */
  restoredEndpoints: unknown = undefined;
  /** Mixed into the paths a source's ring remembers (extract.ts), so that one path on two sites is two paths: a
   *  scanner sweeping the same few paths over every site behind the proxy misses a new path at each. */
  salt = 0;

  constructor(traffic = new DomainTraffic()) { this.traffic = traffic; }

  save(now: number): LearnedDomain {
    return {
      savedAt: now,
      attack: saveAttack(this.traffic.state),
      // keys() runs from the most recently used: reversed, a restore puts them back in the same order.
      staticPaths: [...this.staticPaths.keys()].reverse(),
      bodySizes: this.bodySizes.entries(),
    };
  }

  static restore(l: LearnedDomain, now: number, p: AttackParams): DomainKnowledge {
    const k = new DomainKnowledge(new DomainTraffic(restoreAttack(l.attack, l.savedAt, now, p)));
    if (Array.isArray(l.staticPaths)) for (const h of l.staticPaths) if (typeof h === 'number' && Number.isFinite(h)) k.staticPaths.set(h, true);
    k.bodySizes.restore(l.bodySizes);
    k.restoredEndpoints = l.endpoints;
    return k;
  }
}

export class Knowledge {
  private readonly domains = new Map<string, DomainKnowledge>();

  of(domain: string): DomainKnowledge {
    let k = this.domains.get(domain);
    if (!k) { k = new DomainKnowledge(); this.set(domain, k); }
    return k;
  }

  peek(domain: string): DomainKnowledge | undefined { return this.domains.get(domain); }
  set(domain: string, k: DomainKnowledge): void { k.salt = hashRange(domain, 0, domain.length); this.domains.set(domain, k); }
  entries(): IterableIterator<[string, DomainKnowledge]> { return this.domains.entries(); }

  anyUnderAttack(): boolean {
    for (const k of this.domains.values()) if (k.traffic.state.under) return true;
    return false;
  }

  underAttack(): string[] {
    const out: string[] = [];
    for (const [name, k] of this.domains) if (k.traffic.state.under) out.push(name);
    return out;
  }
}
