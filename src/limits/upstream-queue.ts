// A domain's cap on requests in flight to its upstreams (domains[].maxInflight,
// like HAProxy's server maxconn), with a queue in front of it that is fair
// between sources and ordered by standing.
//
// Why: an origin with 8 worker slots that is handed 300 requests at once
// queues them itself, then answers 503 to everyone, visitors included, for
// the seconds the detectors need to name the attackers. Held here instead,
// the origin works at full speed and the queue decides who goes next:
//   - by class first: sources with a history of browsing (class 0) before
//     unknown ones (1), before suspicious ones (2);
//   - then round robin between the sources of a class, so a flooder with 24
//     requests waiting goes no faster than a visitor with one;
//   - among sources with a history (class 0), with a usage measure (each
//     source's recent origin time, FairShare), the next source is the least
//     used of the first PICK_AMONG in line: people who ask the origin for
//     little go before sources that each ask for a lot (browser-perfect bots
//     outnumbering the people), to whom a per-source round robin would give
//     most turns. An approximation of weighted fair queueing that costs a few
//     lookups per dispatch, not a sorted heap. Not among unknown sources: a
//     newcomer's zero says nothing (a rotating flood is all newcomers).
// A request waits at most timeoutMs; a full queue makes room for a better
// class by refusing the waiter of the worst class whose turn is next.
// Besides the limit, the upstreams' own room (`room`: a free connection in
// their pools): past it a request would wait in undici's queue, in arrival
// order and with no deadline, so it waits here instead, even with no limit.
//
// Memory is bounded by maxQueued waiters, whatever the number of sources.

export type QueueRefusal = 'queue-timeout' | 'queue-full';

export interface Waiter {
  readonly source: string;
  readonly cls: number;
  /** Its turn: false declines it (refused at the last moment), and the place goes to the next waiter. */
  readonly run: () => unknown;
  readonly refuse: (why: QueueRefusal) => void;
  timer: NodeJS.Timeout | null;
  /** Still in the queue (not run, refused nor cancelled). */
  waiting: boolean;
}

export const CLASSES = 3;
/** The next source is the least used among this many at the head of its class's line. */
export const PICK_AMONG = 8;

export class UpstreamQueue {
  /** Most requests in flight to the upstreams; 0 = no cap (only `room` makes them wait). */
  limit: number;
  timeoutMs: number;
  maxQueued: number;
  active = 0;
  queued = 0;
  /** Whether the upstreams can take a request now (a free connection); null: always. */
  room: (() => boolean) | null = null;
  /** pump() is running (see there). */
  private pumping = false;
  /** Per class: source → its waiters, oldest first. A Map keeps insertion order: the first key is next in turn. */
  private readonly classes: Map<string, Waiter[]>[] = Array.from({ length: CLASSES }, () => new Map());

  /** A source's recent use of the origin (ms); null: plain round robin. */
  private readonly usage: ((source: string) => number) | null;
  /** Told when a request of source starts (true) and stops (false) waiting: FairShare judges a source by its pace. */
  private readonly held: ((source: string, on: boolean) => void) | null;

  constructor(limit: number, timeoutMs: number, maxQueued: number, usage: ((source: string) => number) | null = null, held: ((source: string, on: boolean) => void) | null = null) {
    this.limit = limit;
    this.timeoutMs = timeoutMs;
    this.maxQueued = maxQueued;
    this.usage = usage;
    this.held = held;
  }

  /** True when a request may go now without waiting (the caller then owes one leave()). */
  tryEnter(): boolean {
    if (this.queued > 0 || (this.limit > 0 && this.active >= this.limit) || (this.room !== null && !this.room())) return false;
    this.active++;
    return true;
  }

  /**
   * Queues a request that tryEnter refused. `run` is called when it may go (it then owes one leave()),
   * or `refuse` when it waited too long or was pushed out. Returns the waiter, for cancel().
   */
  wait(source: string, cls: number, run: () => unknown, refuse: (why: QueueRefusal) => void): Waiter {
    const w: Waiter = { source, cls: Math.min(Math.max(cls, 0), CLASSES - 1), run, refuse, timer: null, waiting: true };
    if (this.queued >= this.maxQueued) {
      const victim = this.worstBelow(w.cls);
      if (!victim) { w.waiting = false; refuse('queue-full'); return w; }
      this.remove(victim);
      victim.refuse('queue-full');
    }
    const m = this.classes[w.cls];
    const list = m.get(source);
    if (list) list.push(w);
    else m.set(source, [w]);
    this.queued++;
    this.held?.(source, true);
    w.timer = setTimeout(() => { if (w.waiting) { this.remove(w); w.refuse('queue-timeout'); } }, this.timeoutMs);
    this.pump();
    return w;
  }

  /** New settings from a reload; a raised limit lets waiters go at once. */
  reconfigure(limit: number, timeoutMs: number, maxQueued: number): void {
    this.limit = limit;
    this.timeoutMs = timeoutMs;
    this.maxQueued = maxQueued;
    this.pump();
  }

  /** The limit moved (the adaptive limit learned a new one): a raised one lets waiters go at once. */
  setLimit(limit: number): void {
    this.limit = limit;
    this.pump();
  }

  /** A waiter whose client went away: out of the queue, nothing called. */
  cancel(w: Waiter): void { if (w.waiting) this.remove(w); }

  /** An admitted request finished: the next waiter, if any, goes. */
  leave(): void {
    if (this.active > 0) this.active--;
    this.pump();
  }

  /** The upstreams' room may have grown (a request's response ended): waiters go if it did. */
  kick(): void { if (this.queued > 0) this.pump(); }

  /** Sources with requests waiting, per class (for the admin API and tests). */
  waitingSources(): number[] { return this.classes.map((m) => m.size); }

  /** Runs waiters while there is room (the limit may also have been raised by a reload). */
  private pump(): void {
    // Not re-entered: a turn that ends within run() (a request the proxy answers itself) calls leave() from inside it,
    // and a nested pump went one level deeper per such waiter (a few thousand queued overflowed the stack). The loop
    // below sees the room that leave() made.
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queued > 0 && (this.limit === 0 || this.active < this.limit) && (this.room === null || this.room())) {
        const w = this.next();
        if (!w) break;
        this.active++;
        if (w.run() === false) this.active--;
      }
    } finally { this.pumping = false; }
  }

  /** Takes the next waiter in turn: best class, the source whose turn it is, its oldest request. */
  private next(): Waiter | null {
    for (let c = 0; c < CLASSES; c++) {
      const m = this.classes[c];
      if (m.size === 0) continue;
      const source = c === 0 ? this.pick(m) : m.keys().next().value!;
      const list = m.get(source)!;
      const w = list.shift()!;
      // The source goes to the back of the line; a source with nothing left leaves it.
      m.delete(source);
      if (list.length > 0) m.set(source, list);
      this.settle(w);
      return w;
    }
    return null;
  }

  /** The source whose turn it is: the first in line, or the least used of the first PICK_AMONG (first wins ties). */
  private pick(m: Map<string, Waiter[]>): string {
    const keys = m.keys();
    let best = keys.next().value!;
    if (this.usage === null || m.size === 1) return best;
    let least = this.usage(best);
    for (let k = 1; k < PICK_AMONG; k++) {
      const n = keys.next();
      if (n.done) break;
      const u = this.usage(n.value);
      if (u < least) { least = u; best = n.value; }
    }
    return best;
  }

  /** The waiter next in turn in the worst class that is worse than `cls` (its source's oldest request), or null. */
  private worstBelow(cls: number): Waiter | null {
    for (let c = CLASSES - 1; c > cls; c--) {
      const first = this.classes[c].values().next();
      if (!first.done) return first.value[0];
    }
    return null;
  }

  private remove(w: Waiter): void {
    const m = this.classes[w.cls];
    const list = m.get(w.source);
    if (list) {
      const i = list.indexOf(w);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) m.delete(w.source);
    }
    this.settle(w);
  }

  private settle(w: Waiter): void {
    w.waiting = false;
    this.queued--;
    this.held?.(w.source, false);
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
  }
}
