// The request pipeline: what every request's flow (flow.ts) shares — the
// current runtime, the upstreams, detection, the limits that span requests
// (POST budget, per-source in-flight cap, each domain's upstream queue) and
// where observations go. Plain requests and upgrades enter here.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Config, DomainConfig } from '../config/schema.ts';
import type { Upstreams } from '../upstream/upstreams.ts';
import type { Detector } from '../detect/detector.ts';
import type { Observation } from '../observe/observation.ts';
import type { RuntimeRef } from './runtime.ts';
import { Pages } from '../respond/pages.ts';
import { HttpReply, SocketReply } from '../respond/reply.ts';
import { BodyBudget } from '../limits/budget.ts';
import { InflightCounter } from '../limits/inflight.ts';
import type { UpstreamQueue } from '../limits/upstream-queue.ts';
import type { DomainOrigin, OriginGuard } from '../limits/origin-guard.ts';
import { headOf } from '../http/head.ts';
import { connectionInfo } from '../listen/connections.ts';
import { RequestFlow } from './flow.ts';
import { Tunnels } from '../upstream/tunnel.ts';
import type { FlowContext } from './context.ts';

export interface PipelineDeps {
  runtime: RuntimeRef;
  upstreams: Upstreams;
  detector: Detector;
  /** Where every finished request is told (detection, statistics). */
  observers: ((o: Observation) => void)[];
  guard: ConnectionGuard;
  /** Each domain's upstream queue, its learned limit and the sources' shares of its origin. */
  origin: OriginGuard;
}

/** What the listeners ask before a connection becomes requests (layer 4). */
export interface ConnectionGuard {
  /** Shared with every listener: sources on it are refused at accept. */
  readonly blockList: net.BlockList;
  /** A new client connection; false means it must be dropped. */
  onConnection(socket: net.Socket, source: string): boolean;
  /** A request that never became one (slow headers, parse errors, timeouts). */
  onClientError(source: string, kind: string): void;
}

/** Requests one HTTP/1.1 connection may have waiting behind the one being answered (pipelined); past it, it is closed. */
export const PIPELINE_DEPTH = 16;

/**
 * Runs `go` once every answer before it on its HTTP/1.1 connection has gone out (never, if the connection closes
 * first). Node hands over an Upgrade or a CONNECT as soon as it has parsed its head, even behind answers still being
 * written or waiting their turn (pipelined): a 101, a tunnel or a refusal written then would come first, and those
 * answers would be written into the tunnel. Each answer passes the connection to the next as it finishes and is
 * closed a tick later, so each 'close' looks again. Bytes sent after the head wait in the socket meanwhile (Node
 * leaves an upgraded socket paused).
 */
export function afterAnswers(socket: Duplex, go: () => void): void {
  if (socket.destroyed) return;
  const current = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (current) { current.once('close', () => afterAnswers(socket, go)); return; }
  go();
}

export class Pipeline implements FlowContext {
  readonly runtime: RuntimeRef;
  readonly upstreams: Upstreams;
  readonly detector: Detector;
  readonly pages: Pages;
  readonly budget: BodyBudget;
  /** Requests in flight to the upstream per source (limits.maxInflightPerSource). */
  readonly perSource: InflightCounter;
  /** Per domain: requests in flight to its upstreams, and those waiting their turn (for statistics and the admin API). */
  readonly queues: ReadonlyMap<string, UpstreamQueue>;
  readonly origin: OriginGuard;
  /** Open upgrade tunnels, so that shutdown can close them. */
  readonly tunnels = new Tunnels();
  /** Requests between their head and their observation: nothing may leak (tests check it after aborts). */
  inFlight = 0;
  private readonly observers: ((o: Observation) => void)[];
  /** Named for the listeners, which ask it at accept. */
  readonly filter: ConnectionGuard;

  constructor(deps: PipelineDeps) {
    this.runtime = deps.runtime;
    this.upstreams = deps.upstreams;
    this.detector = deps.detector;
    this.observers = deps.observers;
    this.filter = deps.guard;
    this.origin = deps.origin;
    this.queues = deps.origin.queues;
    const config = deps.runtime.current.config;
    this.pages = new Pages(config.pages.dir, config.pages.brand);
    this.budget = new BodyBudget(config.limits.postBudgetBytes);
    // The per-source cap counts people, not addresses: raised by the sessions seen behind a shared address.
    this.perSource = new InflightCounter(config.limits.maxInflightPerSource, (source) => deps.detector.shared.behind(source));
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    if (res.socket === null) return this.later(req, res);
    new RequestFlow(this, headOf(req), req, new HttpReply(res, this.pages), res, null).start();
  };

  /**
   * HTTP/1.1 pipelining: a request that arrives while the one before it on its connection is still being answered
   * has no socket yet (Node answers in order, and hands it the socket once that answer is written). It starts then:
   * a connection's requests go upstream one at a time, as nginx and HAProxy take them. Started at once, a GET
   * pipelined behind a POST reached the upstream first, while the POST's body was still being read at the edge.
   * Node reads on while requests wait (it resumes the connection after each head it parses, so a pause here would
   * not hold, and one left on an Upgrade behind them stalled its tunnel): what bounds them is PIPELINE_DEPTH, past
   * which the connection is closed; a waiting request's body is read only up to the stream's buffer until its turn.
   * One whose connection closes before its turn never starts, and is not counted.
   */
  private later(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket, info = connectionInfo(socket as net.Socket);
    if (++info.pipelined > PIPELINE_DEPTH) {
      // Counted against the source as a malformed request: no client needs that many answers outstanding.
      if (!socket.destroyed) this.filter.onClientError(info.source, 'HPE_PIPELINE_DEPTH');
      socket.destroy();
      return;
    }
    res.once('socket', () => {
      info.pipelined--;
      // Node hands the socket on even when the answer before ended in its destruction: nothing to start then.
      if (!socket.destroyed) this.handle(req, res);
    });
  }

  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => {});
    afterAnswers(socket, () => new RequestFlow(this, headOf(req), req, new SocketReply(socket, this.pages), null, { socket, head }).start());
  };

  /** Also tells `fn` of every finished request (tests, tools). */
  onObserve(fn: (o: Observation) => void): void { this.observers.push(fn); }

  observe(o: Observation): void {
    this.inFlight--;
    for (let i = 0; i < this.observers.length; i++) this.observers[i](o);
  }

  /** The parts that span requests follow a reloaded config; in-flight requests finish on the old runtime. */
  reconfigure(config: Config): void {
    this.pages.configure(config.pages.dir, config.pages.brand);
    this.budget.limit = config.limits.postBudgetBytes;
    this.perSource.limit = config.limits.maxInflightPerSource;
    this.origin.reconfigure(config);
  }

  /** The domain's queue, limit and shares, made on first use. */
  originFor(domain: DomainConfig): DomainOrigin { return this.origin.of(domain); }

  /** Shutdown: every tunnel goes (they have no request to finish). */
  closeTunnels(): void {
    this.tunnels.closeAll();
  }
}
