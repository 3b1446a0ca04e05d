// The in-memory side of statistics: the request path adds numbers into the
// current bucket of its domain (one Map lookup, no I/O, no allocation except
// one array per domain every 3 minutes); a timer drains the deltas into the
// store. Also keeps totals since start for Prometheus.
import type { Observation } from '../observe/observation.ts';
import type { FilterSnapshot } from '../detect/filter.ts';
import { bucketOf, countInto, F, G, BUCKET_SECONDS, newCounters, newGlobal } from './buckets.ts';
import type { DomainDelta, GlobalDelta } from './store.ts';

/** What statistics read of the filter: a periodic snapshot. */
export interface FilterView { snapshot(): FilterSnapshot }

/** `attackCarry`: sampled attack time not yet counted as a whole second; `attackIn`: the bucket attack time was last
 *  counted in (its first second there is counted whole, so a short attack still shades its bucket). */
interface DomainAcc { t: number; c: Float64Array; total: Float64Array; dirty: boolean; attackCarry: number; attackIn: number }

/** Finished-bucket deltas kept while the store refuses writes; past this the oldest are given up. */
const MAX_UNWRITTEN = 50_000;

const isZero = (a: Float64Array) => { for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false; return true; };

export class Recorder {
  private readonly now: () => number;
  private readonly domains = new Map<string, DomainAcc>();
  private finished: DomainDelta[] = [];
  private global: GlobalDelta;
  private finishedGlobal: GlobalDelta[] = [];
  /** Totals since start that belong to no domain (Prometheus). */
  readonly globalTotal = newGlobal();
  lost = 0;
  private lastRefused = 0;

  constructor(now: () => number = Date.now) {
    this.now = now;
    this.global = { t: bucketOf(now()), g: newGlobal() };
  }

  private acc(domain: string, t: number): DomainAcc {
    let a = this.domains.get(domain);
    if (!a) { a = { t, c: newCounters(), total: newCounters(), dirty: false, attackCarry: 0, attackIn: -1 }; this.domains.set(domain, a); }
    else if (a.t !== t) {
      if (a.dirty) { this.finished.push({ domain, t: a.t, c: a.c }); a.c = newCounters(); a.dirty = false; }
      a.t = t;
    }
    return a;
  }

  private globalAcc(t: number): Float64Array {
    if (this.global.t !== t) {
      if (!isZero(this.global.g)) this.finishedGlobal.push(this.global);
      this.global = { t, g: newGlobal() };
    }
    return this.global.g;
  }

  /** The hot path: one finished request. */
  record(o: Observation): void {
    const t = bucketOf(this.now());
    if (o.domain === null) {
      // Malformed or unknown Host: never reached a domain, counted apart.
      const g = this.globalAcc(t);
      g[G.unroutedRequests]++; g[G.unroutedBytesIn] += o.bytesIn; g[G.unroutedBytesOut] += o.bytesOut;
      this.globalTotal[G.unroutedRequests]++; this.globalTotal[G.unroutedBytesIn] += o.bytesIn; this.globalTotal[G.unroutedBytesOut] += o.bytesOut;
      return;
    }
    const a = this.acc(o.domain, t);
    a.dirty = true;
    countInto(a.c, o);
    countInto(a.total, o);
  }

  /** Bytes a domain's open tunnel (a WebSocket) carried since it was last told: passed traffic, no new request. */
  tunnelBytes(domain: string, bytesIn: number, bytesOut: number): void {
    const a = this.acc(domain, bucketOf(this.now()));
    a.dirty = true;
    for (const c of [a.c, a.total]) { c[F.inBytesIn] += bytesIn; c[F.inBytesOut] += bytesOut; c[F.passedBytesIn] += bytesIn; c[F.passedBytesOut] += bytesOut; }
  }

  /** Connections refused at accept (no Host yet, so no domain). */
  droppedAtAccept(count: number): void {
    this.globalAcc(bucketOf(this.now()))[G.acceptDropped] += count;
    this.globalTotal[G.acceptDropped] += count;
  }

  /** A periodic look at the filter: blacklist size (max per bucket), attack mode (seconds per bucket) and the
   *  connections it refused at accept (its monotonic counter, turned into a delta). */
  sample(snap: FilterSnapshot, elapsedSeconds: number): void {
    const t = bucketOf(this.now());
    const g = this.globalAcc(t);
    if (snap.blacklistSize > g[G.blacklistSize]) g[G.blacklistSize] = snap.blacklistSize;
    const refused = snap.droppedConnections;
    // A counter that went down belongs to a new filter instance: all of it is new.
    const delta = refused >= this.lastRefused ? refused - this.lastRefused : refused;
    this.lastRefused = refused;
    if (delta > 0) { g[G.acceptDropped] += delta; this.globalTotal[G.acceptDropped] += delta; }
    const secs = Math.min(Math.max(elapsedSeconds, 0), BUCKET_SECONDS);
    for (const d of snap.underAttack) {
      const a = this.acc(d, t);
      a.dirty = true;
      // Whole seconds, the rest carried: every admin call samples too, a few ms after the timer, and a second for each
      // made one bucket hold 280 s. The first in a bucket counts whole, so that a short attack still shades it (the
      // carry goes below zero for what that second was ahead).
      a.attackCarry += secs;
      let whole = Math.max(0, Math.floor(a.attackCarry));
      if (a.attackIn !== t) { a.attackIn = t; whole = Math.max(whole, 1); }
      a.attackCarry -= whole;
      a.c[F.attackSeconds] = Math.min(a.c[F.attackSeconds] + whole, BUCKET_SECONDS);
    }
  }

  /** Deltas counted by another process (a worker): written with this one's, and added to the totals since start. */
  merge(domains: DomainDelta[], globals: GlobalDelta[]): void {
    const t = bucketOf(this.now());
    for (const d of domains) {
      this.finished.push(d);
      const a = this.acc(d.domain, t);
      for (let i = 0; i < d.c.length; i++) a.total[i] += d.c[i];
    }
    for (const g of globals) {
      this.finishedGlobal.push(g);
      for (let i = 0; i < g.g.length; i++) if (i !== G.blacklistSize) this.globalTotal[i] += g.g[i];
    }
  }

  /** The deltas not yet written; call commit() once they are stored. */
  pending(): { domains: DomainDelta[]; globals: GlobalDelta[] } {
    const domains = [...this.finished];
    for (const [domain, a] of this.domains) if (a.dirty) domains.push({ domain, t: a.t, c: a.c });
    const globals = [...this.finishedGlobal];
    if (!isZero(this.global.g)) globals.push(this.global);
    return { domains, globals };
  }

  /** The deltas handed out by pending() are stored: start counting from zero. */
  commit(): void {
    this.finished = [];
    this.finishedGlobal = [];
    for (const a of this.domains.values()) if (a.dirty) { a.c.fill(0); a.dirty = false; }
    this.global.g.fill(0);
  }

  /** The store refused the write: keep the deltas, but bounded. */
  keepBounded(): void {
    const over = this.finished.length - MAX_UNWRITTEN;
    if (over > 0) { this.finished.splice(0, over); this.lost += over; }
    const overG = this.finishedGlobal.length - MAX_UNWRITTEN;
    if (overG > 0) this.finishedGlobal.splice(0, overG);
  }

  /** Totals since start per domain (Prometheus). */
  totals(): IterableIterator<[string, DomainAcc]> { return this.domains.entries(); }
}
