// The source table (source-slots.ts holds the records, their LRU and their
// keys): the values that are not plain numbers in a record.
//
// Times are ms as Int32 offsets from a base kept near the clock (4 bytes, not
// 8). A time the offset cannot hold exactly (a fractional clock, a trust far
// ahead, an entry untouched for weeks) is kept beside it in a Map, so every
// time reads back exactly as written. Domains are interned names (u16 ids);
// the whitelist version a verdict was cached for is a u16 offset from a base.
import { H, NEVER, SPILLED, SourceSlots, W } from './source-slots.ts';

export { F_WHITELISTED, ipv4, NEVER, SPILLED, W } from './source-slots.ts';

/** When the clock is this far past the base, the base moves up to it (times written ahead of the clock never move it). */
const REBASE_AFTER = 2 ** 30;

export class SourceTable extends SourceSlots {
  private readonly domainIds = new Map<string, number>();
  private readonly domains: (string | null)[] = [null];
  private lastDomain: string | null = null;
  private lastDomainId = 0;

  // ---- values ---------------------------------------------------------------------------------

  /** Kept tiny so that it inlines into the getters and their callers (a call would box the double it returns). */
  getTime(w: number): number {
    const x = this.i32[w];
    return x > SPILLED ? this.hf[0] + x : x === NEVER ? 0 : this.spilled(w);
  }

  private spilled(w: number): number { return this.spill.get(w)!; }

  /** `now` says the value is the clock's reading: only those move the base along. */
  setTime(w: number, v: number, now: boolean): void {
    // The common case, kept small enough to inline: an integer near the base (not 0, which means never).
    const x = v - this.hf[0];
    if ((x | 0) === x && x > SPILLED && x !== 0 && (!now || x <= REBASE_AFTER) && this.i32[w] !== SPILLED) { this.i32[w] = x; return; }
    this.setTimeSlow(w, v, now);
  }

  private setTimeSlow(w: number, v: number, now: boolean): void {
    if (this.i32[w] === SPILLED) this.spill.delete(w);
    if (v === 0) { this.i32[w] = NEVER; return; }
    // The first time far from 0 sets the base (times written before it, relative to 0, move with it).
    if (this.h[H.timeSet] === 0) { this.h[H.timeSet] = 1; this.rebase(Math.floor(v)); }
    else if (now && v - this.hf[0] > REBASE_AFTER) this.rebase(Math.floor(v));
    const x = v - this.hf[0];
    if (Number.isInteger(x) && x > SPILLED && x <= 0x7fffffff) this.i32[w] = x;
    else { this.i32[w] = SPILLED; this.spill.set(w, v); }
  }

  /** Moves the time base up to `base`, rewriting every stored time (once in 2^30 ms, about 12 days). */
  private rebase(base: number): void {
    const delta = base - this.hf[0];
    this.hf[0] = base;
    for (const s of this.slots()) {
      for (let w = s * this.stride; w < s * this.stride + 4; w++) {
        const x = this.i32[w];
        if (x === NEVER || x === SPILLED) continue;
        if (x - delta > SPILLED) this.i32[w] = x - delta;
        else { this.i32[w] = SPILLED; this.spill.set(w, base + x - delta); }
      }
    }
  }

  domainOf(id: number): string | null { return this.domains[id] ?? null; }

  /** Id of a domain name (0: none). Names are few (the configured domains): they are never forgotten. */
  domainId(name: string | null): number {
    if (name === null) return 0;
    // Every request sets its domain: most are the same name as the one before.
    if (name === this.lastDomain) return this.lastDomainId;
    let id = this.domainIds.get(name);
    if (id === undefined) {
      // More names than a u16 holds cannot come from a config; past that, sources simply forget their domain.
      if (this.domains.length > 0xffff) return 0;
      id = this.domains.length;
      this.domains.push(name);
      this.domainIds.set(name, id);
    }
    this.lastDomain = name;
    this.lastDomainId = id;
    return id;
  }

  getWlVersion(b: number): number {
    const x = this.u16[(b + W.marks) * 2];
    return x === 0 ? -1 : this.h[H.wlBase] + x - 1;
  }

  setWlVersion(b: number, v: number): void {
    let x = v - this.h[H.wlBase] + 1;
    if (v < 0) x = 0;
    else if (x < 1 || x > 0xffff) {
      // Past 65,534 whitelist versions: every cached verdict is dropped (recomputed on the next request), the base moves.
      for (const s of this.slots()) this.u16[(s * this.stride + W.marks) * 2] = 0;
      this.h[H.wlBase] = v;
      x = 1;
    }
    this.u16[(b + W.marks) * 2] = x;
  }
}
