// The worker processes of the primary: forked at start, each told what is in
// force (WorkerInit) before it takes a connection; a worker that dies is
// forked again under the same index, so it owns the same sources. Connections
// are handed over with their socket (child.send with a handle; the primary's
// copy is closed once the worker has it).
//
// Node passes one descriptor at a time on a channel: until the worker has
// read it (one turn of its event loop) every later message waits in Node's
// own queue, decisions included, behind all the connections queued before
// them. So the pool keeps its own queue per worker and hands the next
// connection only once Node's acknowledgement of the last one came back (the
// channel's internal NODE_HANDLE_ACK, which Node itself waits for; a message
// of our own would cost the worker a second write and the primary a second
// wake-up per connection): a decision then waits for one handover at most, and
// a connection whose source was banned while it waited is refused here, as at
// accept, instead of being handed over.
import { fork, type ChildProcess } from 'node:child_process';
import type net from 'node:net';
import type { Logger } from '../log.ts';
import { shardOf, type FromWorker, type ToWorker, type WorkerInit, type WorkerReport } from './protocol.ts';
import { silentWorkers, backoffMs, QUICK_DEATH_MS, START_DEADLINE_MS } from './watchdog.ts';
import { MAX_DURATION_MS } from '../config/units.ts';
import { PoolRefusals } from './pool-refusals.ts';

export interface PoolDeps {
  /** The worker's entry module. */
  entry: string;
  count: number;
  log: Logger;
  /** What a worker starts from, taken at each (re)start so that it holds every decision made so far. */
  init(index: number): WorkerInit;
  onMessage(index: number, m: FromWorker): void;
  /** `pid`: the process that sent it (a replaced worker's counters start again from zero). */
  onReport(index: number, r: WorkerReport, pid: number | undefined): void;
  /** A worker process ended (its gauges are gone; its replacement reports afresh). */
  onExit?(index: number): void;
  /** Whether a source is banned now (asked again of a connection that waited for its worker). */
  banned?(source: string): boolean;
  /** A connection that waited was closed for its source's ban: dropped at accept, as Node drops one there. */
  droppedBanned?(): void;
  /** A ready worker silent for this long is killed and replaced (cluster/watchdog.ts; 0: never). */
  watchdogMs?: number;
  /** Connections that may wait for one worker (MAX_HANDING unless given). */
  maxWaiting?: number;
  /** Connections of one source that may wait for its worker (limits.maxConnectionsPerSource; 0: no bound): one address
   *  must not take every place of a worker that fell behind for a moment, and every other source of it with them. */
  maxWaitingPerSource?(): number;
  /** How long a new worker may take to say ready (START_DEADLINE_MS unless given). */
  startDeadlineMs?: number;
  /** The watchdog's clock: monotonic (performance.now) unless given; a wall clock stepped forward would make every
   *  worker look silent at once. */
  now?(): number;
}

interface Waiting { listener: number; source: string; socket: net.Socket; spread: boolean }
interface Worker {
  index: number; child: ChildProcess; ready: boolean; restarts: number; startedAt: number; requests: number;
  /** When anything last came from it (the watchdog's clock). */
  heardAt: number;
  /** As of its last report. */
  memory: WorkerReport['memory'] | null;
  /** Connections for this worker not handed over yet, oldest first, and the one on its way (the primary's copy,
   *  closed once Node's acknowledgement, or its refusal, comes back, or the worker is gone). */
  waiting: Waiting[]; sending: net.Socket | null;
  /** Stopping: told to stop once what waits for it has been handed over ('asked'), and told ('sent'). */
  stop?: 'asked' | 'sent';
}

/** Connections waiting for one worker: a stalled worker would have the primary hold every new connection (and its
 *  descriptor); past this many, new ones are closed. */
const MAX_HANDING = 2000;


/** How often the watchdog looks: a fraction of its shortest allowed silence (2 s). */
const WATCH_EVERY_MS = 500;


export class WorkerPool {
  private readonly d: PoolDeps;
  private readonly workers: (Worker | null)[];
  private stopping = false;
  private nextCollect = 1;
  private turn = 0;
  private readonly collects = new Map<number, { waiting: Set<number>; done: () => void }>();
  private readonly now: () => number;
  private watch: NodeJS.Timeout | null = null;
  private lookedAt = 0;
  private readonly maxWaiting: number;
  /** Connections refused per worker index (across its restarts), and each source's connections waiting. */
  private readonly refused: PoolRefusals;
  /** Follows a reload (workerWatchdogMs). */
  watchdogMs: number;

  constructor(deps: PoolDeps) {
    this.d = deps;
    this.workers = new Array(deps.count).fill(null);
    this.now = deps.now ?? (() => performance.now());
    this.watchdogMs = deps.watchdogMs ?? 0;
    this.maxWaiting = deps.maxWaiting ?? MAX_HANDING;
    this.refused = new PoolRefusals(deps.count, deps.log, () => this.now());
  }

  /** Forks every worker; resolves once all are ready (rejects when one fails to start). */
  async start(): Promise<void> {
    this.lookedAt = this.now();
    this.watch = setInterval(() => this.killSilent(), WATCH_EVERY_MS);
    this.watch.unref();
    await Promise.all(this.workers.map((_, i) => this.spawn(i, 0)));
  }

  /** A worker whose loop stopped turning serves none of its sources: killed, it is replaced as one that died. */
  private killSilent(): void {
    const now = this.now(), lookedAt = this.lookedAt;
    this.lookedAt = now;
    for (const i of silentWorkers(this.workers, now, this.watchdogMs, lookedAt, WATCH_EVERY_MS)) {
      const w = this.workers[i]!;
      this.d.log.error({ worker: i, pid: w.child.pid, silentMs: Math.round(now - w.heardAt) }, 'worker unresponsive; killing it, a new one starts');
      w.ready = false; // nothing more is handed to it; what waits for it goes to the next ready one when it exits
      w.child.kill('SIGKILL');
    }
  }

  /** `quickDeaths`: how many workers under this index in a row died within QUICK_DEATH_MS of their start. */
  private spawn(index: number, restarts: number, quickDeaths = 0): Promise<void> {
    let child: ChildProcess;
    try {
      child = fork(this.d.entry, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
    } catch (e) {
      // Some failed forks throw here (ENOMEM; the IPC pair not made): the index is tried again after the back-off.
      this.d.log.error({ worker: index, err: (e as Error).message }, 'worker could not be forked');
      this.respawnLater(index, restarts, quickDeaths + 1);
      return Promise.reject(e);
    }
    const born = this.now();
    const w: Worker = { index, child, ready: false, restarts, startedAt: born, heardAt: born, memory: null, requests: 0, waiting: [], sending: null };
    this.workers[index] = w;
    const startMs = this.d.startDeadlineMs ?? START_DEADLINE_MS;
    const deadline = setTimeout(() => {
      this.d.log.error({ worker: index, pid: child.pid, afterMs: startMs }, 'worker not ready in time; killing it, a new one starts');
      child.kill('SIGKILL');
    }, startMs);
    deadline.unref();
    return new Promise<void>((resolve, reject) => {
      child.on('message', (m: FromWorker) => {
        w.heardAt = this.now();
        // A "ready" read after the start deadline killed it (both were due while the loop was busy: timers run first)
        // is from a worker that is going: its exit fails the start or starts another.
        // A replacement owns its sources again: the others let go of those they took meanwhile (SourceConnections.release).
        if (m.t === 'ready') { if (child.killed) return; clearTimeout(deadline); w.ready = true; if (restarts > 0) for (const o of this.workers) if (o && o !== w) this.send(o, { t: 'home', index }); resolve(); return; }
        if (m.t === 'failed') { reject(new Error(`worker ${index}: ${m.error}`)); return; }
        if (m.t === 'report') { w.requests += m.r.requests; w.memory = m.r.memory; this.d.onReport(index, m.r, child.pid); this.answered(m.id, index); return; }
        this.d.onMessage(index, m);
      });
      // Node's own listener (registered at fork, so it runs first) has sent what waited behind the descriptor. Sent
      // with keepOpen, the primary's copy is ours to close: the worker has its own once it acknowledged; refused (a
      // worker out of descriptors: Node sends no more of it), the connection is lost and closed here, as it is when
      // the worker dies with it on its way (Node keeps a copy it would close only on an acknowledgement).
      child.on('internalMessage', (m: { cmd?: string }) => {
        if ((m?.cmd !== 'NODE_HANDLE_ACK' && m?.cmd !== 'NODE_HANDLE_NACK') || !w.sending) return;
        w.heardAt = this.now();
        w.sending.destroy();
        w.sending = null;
        if (m.cmd === 'NODE_HANDLE_NACK') this.refuse(index, 'the worker could not take a connection (out of descriptors?)');
        this.handOver(w);
      });
      // A fork that failed late (EMFILE, EAGAIN: the primary out of descriptors or processes, as under a connection
      // flood) says so with 'error' and never 'exit': it is an exit all the same, or the index stays empty for good.
      child.on('error', (e) => {
        this.d.log.warn({ worker: index, err: e.message }, child.pid === undefined ? 'worker could not be forked' : 'worker IPC error');
        if (child.pid === undefined) exited(null, null);
      });
      let gone = false;
      const exited = (code: number | null, signal: NodeJS.Signals | null) => {
        if (gone) return;
        gone = true;
        clearTimeout(deadline);
        w.ready = false;
        w.sending?.destroy();
        w.sending = null;
        // What waited for this worker goes to the next ready one (its replacement owns the sources again later).
        for (const c of w.waiting.splice(0)) { this.left(c); if (this.stopping) c.socket.destroy(); else this.dispatch(c.listener, c.source, c.socket, c.spread); }
        this.d.onExit?.(index);
        for (const c of this.collects.values()) if (c.waiting.delete(index) && c.waiting.size === 0) c.done();
        if (this.workers[index] === w && !this.stopping) {
          reject(new Error(`worker ${index} exited (${signal ?? code}) before it was ready`));
          // Quick deaths in a row wait longer each time, so a worker that cannot start does not spin the machine; one
          // that lived its life (a crash a week after the last) starts again at once.
          const quick = this.now() - w.startedAt < QUICK_DEATH_MS ? quickDeaths + 1 : 0;
          const wait = backoffMs(quick);
          this.d.log.error({ worker: index, pid: child.pid, code, signal, restartInMs: wait }, 'worker died; starting a new one');
          this.respawnLater(index, w.restarts, quick, wait);
        }
      };
      child.once('exit', exited);
      // What a worker starts from is read from the store: one that cannot be read now (a full disk, a locked file)
      // must not leave this child waiting for ever (never ready, so no watchdog either): it goes, and the exit above
      // starts another after the back-off.
      let init: WorkerInit;
      try { init = this.d.init(index); } catch (e) {
        this.d.log.error({ worker: index, err: (e as Error).message }, 'worker init failed; starting a new one');
        child.kill('SIGKILL');
        return;
      }
      this.send(w, { t: 'init', init });
    });
  }

  /** Forks index again after `wait` (by default its back-off): a failure then is logged, not thrown out of a timer. */
  private respawnLater(index: number, restarts: number, quick: number, wait = backoffMs(quick)): void {
    setTimeout(() => { if (!this.stopping) this.spawn(index, restarts + 1, quick).catch((e) => this.d.log.error({ err: (e as Error).message }, 'worker restart failed')); }, wait);
  }

  private send(w: Worker, m: ToWorker): void {
    if (w.child.connected) w.child.send(m, () => {});
  }

  private sendStop(w: Worker): void { if (w.stop !== 'sent') { w.stop = 'sent'; this.send(w, { t: 'stop' }); } }

  /** Hands over the oldest waiting connection unless one is on its way (Node's acknowledgement calls this again);
   *  stopping, the worker is told to stop once none is left. */
  private handOver(w: Worker): void {
    this.handOn(w);
    if (w.stop === 'asked' && !w.sending && w.waiting.length === 0) this.sendStop(w);
  }

  private handOn(w: Worker): void {
    while (!w.sending && w.waiting.length > 0) {
      const c = w.waiting.shift()!;
      this.left(c);
      if (this.d.banned?.(c.source)) { c.socket.destroy(); this.d.droppedBanned?.(); continue; }
      // Its channel closed just before its exit: no longer ready, its connections go to the next one, as at the exit.
      if (!w.child.connected) { w.ready = false; if (this.stopping) c.socket.destroy(); else this.dispatch(c.listener, c.source, c.socket, c.spread); continue; }
      w.sending = c.socket;
      w.child.send({ t: 'conn', l: c.listener } satisfies ToWorker, c.socket, { keepOpen: true }, (e) => {
        if (!e) return;
        c.socket.destroy();
        if (w.sending === c.socket) w.sending = null;
        this.handOver(w);
      });
    }
  }

  /** Hands a connection to the worker that owns its source; while that one is being replaced, to the next ready one.
   *  `spread`: a source with nothing to judge (whitelisted) goes round robin, so one trusted address (a monitor, a
   *  load test, a partner's gateway) is not held to one core. */
  dispatch(listener: number, source: string, socket: net.Socket, spread = false): void {
    const n = this.workers.length;
    const home = spread ? this.turn++ % n : shardOf(source, n);
    for (let k = 0; k < n; k++) {
      const w = this.workers[(home + k) % n];
      if (!w?.ready) continue;
      if (w.waiting.length >= this.maxWaiting) { socket.destroy(); this.refuse(w.index, 'too many connections wait for this worker'); return; }
      if (!this.refused.enter(source, spread ? 0 : this.d.maxWaitingPerSource?.() ?? 0)) { socket.destroy(); this.refuse(w.index, 'a source has limits.maxConnectionsPerSource connections waiting for this worker'); return; }
      w.waiting.push({ listener, source, socket, spread });
      this.handOver(w);
      return;
    }
    socket.destroy();
    this.refuse(home, 'no worker is ready (all are starting)');
  }

  private refuse(index: number, why: string): void { this.refused.refuse(index, why, this.maxWaiting); }
  private left(c: Waiting): void { this.refused.left(c.source); }

  /** To every worker alive, ready or still starting (a starting one applies it after its init). */
  broadcast(m: ToWorker): void { for (const w of this.workers) if (w) this.send(w, m); }

  /** Asks every ready worker for what it counted since its last report; resolves when all answered (or timeoutMs). */
  collect(timeoutMs = 500): Promise<void> {
    const ready = this.workers.filter((w): w is Worker => w?.ready === true);
    if (!ready.length) return Promise.resolve();
    const id = this.nextCollect++;
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => { this.collects.delete(id); resolve(); }, timeoutMs);
      this.collects.set(id, { waiting: new Set(ready.map((w) => w.index)), done: () => { clearTimeout(t); this.collects.delete(id); resolve(); } });
      for (const w of ready) this.send(w, { t: 'collect', id });
    });
  }

  private answered(id: number, index: number): void {
    const c = this.collects.get(id);
    if (c && c.waiting.delete(index) && c.waiting.size === 0) c.done();
  }

  /** What /api/workers shows: memory as of the last report, and how long ago anything came from each (the watchdog's view). */
  list(): { index: number; pid: number | undefined; ready: boolean; restarts: number; requests: number; rssBytes: number | null; heapUsedBytes: number | null; silentMs: number; refusedConnections: number }[] {
    const now = this.now();
    return this.workers.filter((w): w is Worker => w !== null).map((w) => ({
      index: w.index, pid: w.child.pid, ready: w.ready, restarts: w.restarts, requests: w.requests,
      rssBytes: w.memory?.rss ?? null, heapUsedBytes: w.memory?.heapUsed ?? null, silentMs: Math.round(now - w.heardAt),
      refusedConnections: this.refused.total(w.index),
    }));
  }

  /** Tells every worker to drain and stop; past drainMs and a grace second, what is left is killed. */
  async stop(drainMs: number): Promise<void> {
    this.stopping = true;
    if (this.watch) clearInterval(this.watch);
    const alive = this.workers.filter((w): w is Worker => w !== null && w.child.exitCode === null && w.child.signalCode === null);
    // 'close', not 'exit': it comes after the last messages (a worker's final counts) have been read.
    const exited = alive.map((w) => new Promise<void>((r) => w.child.once('close', () => r())));
    // A connection accepted before the listeners closed, still waiting for its (busy) worker, is served in the drain:
    // 'stop' goes after the last of them (a worker that stops destroys what it is handed after), within the drain time.
    for (const w of alive) { w.stop = 'asked'; this.handOver(w); }
    const late = setTimeout(() => { for (const w of alive) this.sendStop(w); }, Math.min(drainMs, MAX_DURATION_MS));
    // Node fires a timer past 2^31-1 ms at once: a drain time near the config's longest would kill every worker now.
    const kill = setTimeout(() => { for (const w of alive) w.child.kill('SIGKILL'); }, Math.min(drainMs + 3000, MAX_DURATION_MS));
    await Promise.all(exited);
    clearTimeout(late);
    clearTimeout(kill);
  }
}
