// Per-source cap on requests in flight to the upstream. A browser speaks to a
// host over at most 6 HTTP/1.1 connections, so it never has more than 6
// requests outstanding; a few people behind one NAT address stay under a cap
// of a few dozen. A flooder opens as many connections as it likes: without a
// cap, one source can fill every worker slot of the upstream in the first
// second of an attack, before any detector has seen enough to ban it.
// One address can be many people (a NAT): the cap is multiplied by how many
// people its traffic shows (scale; SharedAddresses counts their sessions).
// Only sources with a request in flight are kept, so memory is bounded by the
// number of requests in flight, whatever the number of sources.
import { scaledCap } from '../detect/sessions-seen.ts';

export class InflightCounter {
  /** Most requests in flight per source; 0 = no cap. */
  limit: number;
  private readonly counts = new Map<string, number>();
  private readonly scale: (source: string) => number;

  constructor(limit: number, scale: (source: string) => number = () => 1) { this.limit = limit; this.scale = scale; }

  /** Takes a slot for `source`; false (and nothing taken) when it already has its cap (limit × people behind it) in flight. */
  acquire(source: string): boolean {
    const n = this.counts.get(source) ?? 0;
    if (this.limit > 0 && n >= this.limit && n >= scaledCap(this.limit, this.scale(source))) return false;
    this.counts.set(source, n + 1);
    return true;
  }

  /** Gives back a slot taken by acquire (exactly once per successful acquire). */
  release(source: string): void {
    const n = this.counts.get(source);
    if (n === undefined) return;
    if (n <= 1) this.counts.delete(source);
    else this.counts.set(source, n - 1);
  }

  /** Requests in flight for a source (0 when none). */
  of(source: string): number { return this.counts.get(source) ?? 0; }

  /** Sources with at least one request in flight. */
  get sources(): number { return this.counts.size; }
}
