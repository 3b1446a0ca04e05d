// The request pipeline: sequences the stages of one request. Each stage is a
// small module that knows nothing of the others:
//   hygiene → route → filter → maintenance → limits → body buffer → upstream queue
//   → balance/forward → observe
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config, DomainConfig } from '../config/schema.ts';
import { buildRouteTable, route, type RouteTable } from '../route/router.ts';
import { toUpstreamHeaders } from '../upstream/headers.ts';
import { forward, type ForwardOutcome } from '../upstream/forward.ts';
import type { Upstreams } from '../upstream/upstreams.ts';
import { Pages, type PageReason } from '../respond/pages.ts';
import { BodyBudget, declaredBodySize } from '../limits/budget.ts';
import { BodyMeter } from '../limits/body-meter.ts';
import { InflightCounter } from '../limits/inflight.ts';
import { UpstreamQueue, type Waiter } from '../limits/upstream-queue.ts';
import { bufferBody } from '../limits/body-buffer.ts';
import { BodyLimitError } from '../limits/body-meter.ts';
import type { Readable } from 'node:stream';
import { checkRequest } from '../http/hygiene.ts';
import { connectionInfo } from '../listen/connections.ts';
import type { FilterHooks, Observation, Outcome, StatsHooks } from '../observe/observation.ts';

export interface Runtime {
  config: Config;
  routes: RouteTable;
}

export function buildRuntime(config: Config): Runtime {
  return { config, routes: buildRouteTable(config.domains) };
}

export class Pipeline {
  runtime: Runtime;
  readonly pages: Pages;
  readonly budget: BodyBudget;
  /** Requests in flight to the upstream per source (limits.maxInflightPerSource). */
  readonly perSource: InflightCounter;
  inFlight = 0;
  /** Per domain: requests in flight to its upstreams, and those waiting their turn (domains[].maxInflight). */
  readonly queues = new Map<string, UpstreamQueue>();

  readonly upstreams: Upstreams;
  filter: FilterHooks;
  stats: StatsHooks;

  constructor(config: Config, upstreams: Upstreams, filter: FilterHooks, stats: StatsHooks) {
    this.upstreams = upstreams;
    this.filter = filter;
    this.stats = stats;
    this.runtime = buildRuntime(config);
    this.pages = new Pages(config.pages.dir, config.pages.brand);
    this.budget = new BodyBudget(config.limits.postBudgetBytes);
    this.perSource = new InflightCounter(config.limits.maxInflightPerSource);
    upstreams.apply(config);
  }

  /** A new config takes effect for the next request; in-flight ones finish on the old one. */
  reconfigure(config: Config): void {
    this.upstreams.apply(config);
    this.pages.configure(config.pages.dir, config.pages.brand);
    this.budget.limit = config.limits.postBudgetBytes;
    this.perSource.limit = config.limits.maxInflightPerSource;
    this.runtime = buildRuntime(config);
    // A removed domain's queue keeps counting its last requests out, with no cap.
    for (const [name, q] of this.queues) {
      const d = config.domains.find((x) => x.name === name);
      q.reconfigure(d?.maxInflight ?? 0, config.limits.queueTimeoutMs, config.limits.maxQueued);
    }
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    const { config, routes } = this.runtime;
    const conn = connectionInfo(req.socket);
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const headBytes = estimateHeadBytes(req);
    this.inFlight++;
    let settled = false;
    let queuedAt = 0, queuedMs = 0, sentAt = 0;
    const observe = (domain: DomainConfig | null, outcome: Outcome, status: number, bytesIn: number, bytesOut: number, proxyReason: string | null, f?: ForwardOutcome) => {
      if (settled) return;
      settled = true;
      this.inFlight--;
      const o: Observation = {
        domain: domain?.name ?? null, source: conn.source, client: conn.client, method, path: url, status,
        bytesIn, bytesOut, durationMs: performance.now() - started, contentType: f?.contentType ?? null, outcome, proxyReason,
        upstreamError: f?.upstreamError ?? (outcome === 'passed' && status >= 500 ? '5xx' : null), newConnection: conn.requests === 1,
        queuedMs, upstreamMs: sentAt > 0 ? performance.now() - sentAt : 0,
      };
      this.filter.observe(o);
      this.stats.record(o);
    };
    conn.requests++;
    const refuse = (domain: DomainConfig | null, status: number, reason: PageReason, extra: { headers?: Record<string, string>; close?: boolean; name?: string } = {}) => {
      void this.pages.send(res, status, reason, domain?.name ?? null, extra).catch(() => res.destroy());
      observe(domain, 'proxy', status, headBytes, 0, reason);
    };

    const problem = checkRequest(method, url, req.rawHeaders, config.limits.maxHeaderCount);
    if (problem) {
      this.pages.sendBuiltin(res, problem.status, problem.reason);
      return observe(null, 'proxy', problem.status, headBytes, 0, problem.reason);
    }

    const r = route(routes, req.headers.host);
    if (!r.ok) return refuse(null, r.status, r.reason);
    const domain = r.domain;

    if (!this.filter.admit(req, res, { source: conn.source, client: conn.client, domain, newConnection: conn.requests === 1 })) {
      return observe(domain, res.headersSent ? 'challenged' : 'blocked', res.statusCode, headBytes, 0, null);
    }

    if (domain.maintenance.enabled) {
      const m = domain.maintenance;
      if (m.redirect) {
        res.writeHead(302, { location: m.redirect, 'x-scrubber': 'maintenance', 'cache-control': 'no-store', 'content-length': 0 });
        res.end();
        return observe(domain, 'proxy', 302, headBytes, 0, 'maintenance');
      }
      return refuse(domain, 503, 'maintenance', { name: 'maintenance', headers: { 'retry-after': String(m.retryAfterSeconds) } });
    }

    // Limits: judged on the declared size before a byte of the body is read.
    const cl = req.headers['content-length'];
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const declared = declaredBodySize(cl, chunked, config.limits.maxBodyBytes);
    if (declared > config.limits.maxBodyBytes) return refuse(domain, 413, 'body-too-large', { close: true });
    // One source may not hold more than its share of the upstream, from its first request on: past the cap it gets
    // our 503 at once (the filter counts it as 'overCap': a source that keeps hitting the cap is flooding). A body
    // we will not read would desynchronise the connection, so then it is closed.
    const source = conn.source;
    if (!this.perSource.acquire(source)) {
      return refuse(domain, 503, 'overloaded', { headers: { 'retry-after': '1' }, close: declared > 0 });
    }
    if (!this.budget.reserve(declared)) {
      this.perSource.release(source);
      return refuse(domain, 413, 'post-budget', { close: true });
    }

    const group = this.upstreams.groups.get(domain.name)!;
    const queue = this.queueFor(domain);
    let meter: BodyMeter | null = null;
    // The slots are given back once, whatever way the request ends.
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.budget.release(declared);
      this.perSource.release(source);
      if (meter && !meter.writableFinished) { req.unpipe(meter); meter.destroy(); }
    };
    const headers = toUpstreamHeaders(req.rawHeaders, { client: conn.client, proto: conn.tls ? 'https' : 'http', host: r.host });

    const go = (body: Buffer | Readable | null) => {
      sentAt = performance.now();
      forward({
        req, res, path: url, method, headers, body,
        responseTimeoutMs: config.upstream.responseTimeoutMs, connectAttempts: config.upstream.connectAttempts,
        replaceErrorPages: domain.proxyErrorPages, finishOnClientAbort: domain.maxInflight > 0,
      }, group, (out, sendPage) => {
        const bytesIn = headBytes + (meter?.bytes ?? 0);
        release();
        queue.leave();
        if (sendPage && out.proxyReason) {
          const close = meter !== null && !req.complete;
          void this.pages.send(res, out.status, out.proxyReason, domain.name, { close }).catch(() => res.destroy());
          return observe(domain, 'proxy', out.status, bytesIn, 0, out.proxyReason, out);
        }
        observe(domain, out.clientAborted ? 'proxy' : 'passed', out.status, bytesIn, out.bytesOut, null, out);
      });
    };
    // The common case, no body and room upstream: straight on, nothing more allocated.
    if (declared === 0 && queue.tryEnter()) return go(null);

    // From here the request may wait (for its body, for its turn): a client that leaves meanwhile frees everything.
    let buffering: { cancel(): void } | null = null;
    let waiter: Waiter | null = null;
    const gone = () => {
      buffering?.cancel();
      if (waiter) queue.cancel(waiter);
      release();
      observe(domain, 'proxy', 0, headBytes + (meter?.bytes ?? 0), 0, null);
    };
    res.once('close', gone);
    const proceed = (body: Buffer | Readable | null) => {
      if (queue.tryEnter()) { res.off('close', gone); return go(body); }
      queuedAt = performance.now();
      waiter = queue.wait(source, this.filter.rank?.(source) ?? 1,
        () => { waiter = null; queuedMs = performance.now() - queuedAt; res.off('close', gone); go(body); },
        (why) => {
          waiter = null;
          queuedMs = performance.now() - queuedAt;
          res.off('close', gone);
          const close = meter !== null && !req.complete;
          release();
          refuse(domain, 503, why, { headers: { 'retry-after': '1' }, close });
        });
    };
    if (declared === 0) return proceed(null);

    meter = new BodyMeter(config.limits.maxBodyBytes, config.limits.minBodyRateBytesPerSec, config.limits.minBodyRateGraceMs);
    req.pipe(meter);
    if (config.limits.bufferBodyBytes === 0) return proceed(meter);
    buffering = bufferBody(meter, config.limits.bufferBodyBytes, (b) => {
      buffering = null;
      if (b.ok) return proceed(b.body);
      res.off('close', gone);
      release();
      if (b.error instanceof BodyLimitError) return refuse(domain, b.error.reason === 'body-too-large' ? 413 : 408, b.error.reason, { close: true });
      res.destroy();
      observe(domain, 'proxy', 0, headBytes, 0, null);
    });
  };

  /** The domain's upstream queue (domains[].maxInflight), made on first use. */
  private queueFor(domain: DomainConfig): UpstreamQueue {
    let q = this.queues.get(domain.name);
    if (!q) {
      const l = this.runtime.config.limits;
      q = new UpstreamQueue(domain.maxInflight, l.queueTimeoutMs, l.maxQueued);
      this.queues.set(domain.name, q);
    }
    return q;
  }
}

/** Request line and header bytes as they came on the wire, near enough for statistics. */
function estimateHeadBytes(req: IncomingMessage): number {
  let n = (req.method?.length ?? 3) + (req.url?.length ?? 1) + 12;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i++) n += raw[i].length + 2;
  return n + 2;
}

