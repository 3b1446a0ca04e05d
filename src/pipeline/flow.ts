// One request's way through the proxy, as one object with one method per step
// (the shape of an undici dispatch handler):
//   start: hygiene → route → detect → maintenance → limits
//   → readBody (at the edge) → enterQueue (the domain's upstream) → forward → finish
// Plain requests and upgrades take the same steps but the last (a streamed response, or a tunnel).
// Stages decide (pure functions, the detector's verdict); the flow enforces, and answers through its Reply.
// The slots a request holds (POST budget, per-source cap) are given back
// exactly once, in release(), whatever way the request ends; its place in the
// domain's upstream limit (`slot`) exactly once too: at the upstream's response
// headers (upstreamAnswered), at its failure (forwarded), or when it outlived
// every answer (outlived) — each a sample for the origin guard but the last.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable, Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { DomainConfig } from '../config/schema.ts';
import type { RequestHead } from '../http/head.ts';
import { maintenanceAnswer, type Answer, type Reply } from '../respond/reply.ts';
import { isOverloadStatus, type Outcome, type ProxyReason } from '../observe/observation.ts';
import type { ForwardOutcome } from '../upstream/forward.ts';
import type { QueueRefusal, Waiter } from '../limits/upstream-queue.ts';
import type { DomainOrigin } from '../limits/origin-guard.ts';
import type { FlowContext } from './context.ts';
import type { Runtime } from './runtime.ts';
import { checkRequest } from '../http/hygiene.ts';
import { route } from '../route/router.ts';
import { toUpstreamHeaders } from '../upstream/headers.ts';
import { forward } from '../upstream/forward.ts';
import { declaredBodySize } from '../limits/budget.ts';
import { BodyLimitError, BodyMeter } from '../limits/body-meter.ts';
import { bufferBody } from '../limits/body-buffer.ts';
import { forwardUpgrade } from './upgrade.ts';
import { bodyOf } from '../http/expect-continue.ts';
import { exemptRefusal } from '../challenge/policy.ts';
import { connectionInfo, requestEnded } from '../listen/connections.ts';

type Body = Buffer | Readable | null;
const BAD_VERSION = { status: 400, reason: 'bad-request' } as const;
const HEAD_TOO_LARGE = { status: 431, reason: 'headers-too-large' } as const; // Node's limit leaves out the separators

export class RequestFlow {
  private readonly p: FlowContext;
  private readonly rt: Runtime;
  private readonly head: RequestHead;
  private readonly req: IncomingMessage;
  private readonly reply: Reply;
  /** The HTTP response, or null for an upgrade (whose answer is written on `socket`). */
  private readonly res: ServerResponse | null;
  private readonly socket: Duplex | null;
  private readonly upgradeHead: Buffer | null;
  private readonly started = performance.now();
  private domain: DomainConfig | null = null; private host = ''; private origin: DomainOrigin | null = null;
  /** Holds a place in the domain's upstream queue: given back at the upstream's response headers, or when it fails. */
  private slot = false;
  /** Holds a place in the domain's newcomers' slice (under attack, a source without a history): given back once. */
  private newcomer = false;
  private declared = 0; private holding = false;
  private meter: BodyMeter | null = null;
  private buffering: { cancel(): void } | null = null;
  private waiter: Waiter | null = null; private settled = false;
  private queuedAt = 0; private queuedMs = 0;
  /** performance.now() when it went upstream (the origin guard reads it: see outlived); the time from there to its
   *  headers (-1 before: upstreamAnswered), and whether it outlived every answer (outlived). */
  sentAt = 0; private headersMs = -1; private outlivedAll = false;
  /** Links of the domain's HolderList (limits/holders.ts). */
  prevHolder: RequestFlow | null = null;
  nextHolder: RequestFlow | null = null;

  constructor(p: FlowContext, head: RequestHead, req: IncomingMessage, reply: Reply, res: ServerResponse | null, upgrade: { socket: Duplex; head: Buffer } | null) {
    this.p = p;
    this.rt = p.runtime.current;
    this.head = head;
    this.req = req;
    this.reply = reply;
    this.res = res;
    this.socket = upgrade?.socket ?? null;
    this.upgradeHead = upgrade?.head ?? null;
    p.inFlight++;
  }

  start(): void {
    const { head, rt } = this;
    const config = rt.config;
    // A request line without a version is HTTP/0.9 to Node's parser (headers and a body may follow): refused.
    const problem = head.version === '0.9' ? BAD_VERSION : head.headBytes > config.limits.maxHeaderBytes ? HEAD_TOO_LARGE : checkRequest(head.method, head.url, head.rawHeaders, config.limits.maxHeaderCount);
    if (problem) {
      const r = route(rt.routes, head.authority); // its domain's traffic when its Host names one (judged malformed all the same)
      if (r.ok) this.domain = r.domain;
      return this.observe('proxy', problem.status, head.headBytes, this.reply.sendBuiltin(problem.status, problem.reason), problem.reason);
    }
    const r = route(rt.routes, head.authority);
    if (!r.ok) return this.refuse({ status: r.status, reason: r.reason, page: true });
    const domain = this.domain = r.domain;
    this.host = r.host;

    const v = this.p.detector.judge(head, domain, this.res === null);
    if (v.kind === 'drop') {
      this.req.socket.destroy();
      this.socket?.destroy();
      return this.observe('blocked', 0, head.headBytes, 0, null);
    }
    // refuse: banned, but it cannot use a page: it is told 429 + Retry-After, then its connections go (closeSource).
    if (v.kind !== 'pass') return this.refuse(v.answer, v.kind === 'challenge' ? 'challenged' : 'blocked');
    if (domain.maintenance.enabled) return this.refuse(maintenanceAnswer(domain.maintenance));

    // Limits: judged on the declared size before a byte of the body is read.
    const h = head.headers;
    const declared = declaredBodySize(h['content-length'], h['transfer-encoding'] !== undefined, config.limits.maxBodyBytes);
    if (declared > config.limits.maxBodyBytes && h['content-length'] !== undefined) return this.refuse({ status: 413, reason: 'body-too-large', page: true, close: true });
    // One source may not hold more than its share of the upstream, from its first request on: past the cap it gets
    // our 503 at once (detection counts it as 'overCap': a source that keeps hitting the cap is flooding). A body
    // we will not read would desynchronise the connection, so then it is closed.
    if (!this.p.perSource.acquire(head.source)) return this.refuseBusy('overloaded', declared > 0);
    if (!this.p.budget.reserve(declared)) { this.p.perSource.release(head.source); return this.refuse({ status: 413, reason: 'post-budget', page: true, close: true }); }
    this.declared = declared;
    this.holding = true;
    const queue = (this.origin = this.p.originFor(domain)).queue;
    // Upgrades too (any request may carry the headers, answered as a plain one where no WebSocket is); they hold their
    // per-source slot and slice until the upstream answers the handshake, the tunnel then none.
    if (!this.inSlice()) { this.release(); return this.refuseBusy('newcomer-share', declared > 0); }
    if (this.res === null) return this.forwardUpgrade();
    // The common case, no body and room upstream: straight on, nothing more allocated.
    if (declared === 0 && queue.tryEnter()) return this.forward(null);
    // From here the request may wait (for its body, for its turn): a client that leaves meanwhile frees everything.
    this.res.once('close', this.gone);
    if (declared === 0) return this.enterQueue(null);
    this.readBody();
  }

  /** Reads the body at the edge (up to limits.bufferBodyBytes) so that a slow upload holds no upstream slot. */
  private readBody(): void {
    const l = this.rt.config.limits;
    const meter = this.meter = new BodyMeter(l.maxBodyBytes, l.minBodyRateBytesPerSec, l.minBodyRateGraceMs);
    bodyOf(this.req, this.res).pipe(meter);
    if (l.bufferBodyBytes === 0) return this.enterQueue(meter);
    this.buffering = bufferBody(meter, l.bufferBodyBytes, (b) => {
      this.buffering = null;
      if (b.ok) this.enterQueue(b.body); else this.bodyFailed(b.error);
    });
  }

  /** Its body failed before it went upstream (too large, too slow): it holds nothing more, and is told so. */
  private bodyFailed(e: Error): void {
    this.res!.off('close', this.gone); this.release();
    if (e instanceof BodyLimitError) return this.refuse({ status: e.reason === 'body-too-large' ? 413 : 408, reason: e.reason, page: true, close: true });
    this.reply.destroy(); this.observe('proxy', 0, this.head.headBytes, 0, null);
  }

  /** Takes a place in the domain's upstream queue, fair between sources and ordered by their standing. */
  private enterQueue(body: Body): void {
    const queue = this.origin!.queue;
    if (queue.tryEnter()) { this.res!.off('close', this.gone); return this.forward(body); }
    this.queuedAt = performance.now();
    // A source over its share of a saturated origin waits behind the others, whatever its standing.
    const source = this.head.source;
    const cls = this.p.origin.queueClass(this.origin!, source, this.p.detector.rank(source), this.p.detector.attackSince(this.domain!.name));
    const no = (why: QueueRefusal | 'newcomer-share') => this.refuseBusy(why, this.leaveQueue());
    this.waiter = queue.wait(source, cls, () => this.atTurn(body, no), no);
    if (this.waiter.waiting && this.head.version !== '2.0') { if (this.req.socket.readableEnded) return this.fin(); this.req.socket.once('end', this.fin); }
    // A streamed body may fail while it waits (too slow, too large): answered now; unheard, its 'error' killed the process.
    if (body && !Buffer.isBuffer(body) && this.waiter.waiting) body.once('error', (e) => { if (this.waiter?.waiting) { queue.cancel(this.waiter); this.waited(); this.bodyFailed(e); } });
  }

  /** Its turn in the queue. The domain may have come under attack while it waited: a navigation the challenge would now
   *  stop gets it (a 302 costs the origin nothing; forwarded, each of a flood's requests queued in the seconds before
   *  attack mode would take a place at the origin ahead of the people), and a newcomer must still fit the slice. */
  private atTurn(body: Body, no: (why: 'newcomer-share') => void): boolean {
    const v = this.p.detector.judgeAtTurn(this.head, this.domain!);
    if (v.kind === 'challenge') { const close = this.leaveQueue(); this.refuse(close ? { ...v.answer, close } : v.answer, 'challenged'); return false; }
    if (!this.inSlice(true)) { no('newcomer-share'); return false; }
    this.waited();
    this.forward(body);
    return true;
  }

  /** Under attack, sources without a history share one slice of the origin (a rotating flood has none to judge one by
   *  one): false when it is used up. Asked when the request would go upstream: at once, or at its turn in the queue.
   *  Not of a static asset (cheap: the challenge lets it through too), nor at its turn of a request the challenge
   *  policy does not exempt (atTurn asked the challenge first; only what it exempts needs the slice). */
  private inSlice(atTurn = false): boolean {
    const d = this.p.detector, name = this.domain!.name, since = d.attackSince(name);
    if (since === 0 || this.newcomer || d.cheap(this.head.url, name) || (atTurn && !d.exempt(this.head, this.domain!))) return true;
    const n = this.p.origin.enterSlice(this.origin!, this.head.source, d.rank(this.head.source), since);
    this.newcomer = n > 0;
    return n >= 0;
  }

  /** Out of the queue, not upstream: gives back what it holds; true when its body is unread (the answer must close). */
  private leaveQueue(): boolean { this.waited(); const close = this.meter !== null && !this.req.complete; this.release(); return close; }
  private waited(): void { this.waiter = null; this.queuedMs = performance.now() - this.queuedAt; this.res!.off('close', this.gone); if (this.finFn) this.req.socket.off('end', this.finFn); }

  private forward(body: Body): void {
    const { head, domain } = this, config = this.rt.config;
    this.sentAt = performance.now(); this.slot = true;
    this.origin!.holders.add(this);
    if (this.meter) this.meter.onStep = (n) => this.p.tunnels.onBytes?.(domain!.name, n, 0); // a long upload, told as it goes
    forward({
      req: this.req, res: this.res!, path: head.url, method: head.method, headers: this.upstreamHeaders(false), body,
      responseTimeoutMs: config.upstream.responseTimeoutMs, connectAttempts: config.upstream.connectAttempts, sendTimeoutMs: config.limits.sendTimeoutMs,
      replaceErrorPages: domain!.proxyErrorPages, finishOnClientAbort: this.origin!.queue.limit > 0, listener: this,
    }, this.p.upstreams.groups.get(domain!.name), this.forwarded);
  }

  /** The upstream answered: its work is done, so the slot goes to the next waiter (a long body or a stream then holds
   *  none), and the time it took is a sample of the origin's latency. An application's 502/503/504 says it is overloaded. */
  upstreamAnswered(status: number): void {
    const ms = this.headersMs = performance.now() - this.sentAt;
    if (!this.slot) return;
    this.p.origin.sample(this.origin!, this.head.source, ms, isOverloadStatus(status), this.head);
    this.leaveSlice(ms);
    this.freeSlot();
  }

  /** Gives its place in the domain's upstream limit back (exactly once: callers check `slot`). */
  private freeSlot(): void { this.slot = false; this.origin!.holders.delete(this); this.origin!.queue.leave(); }

  private readonly forwarded = (out: ForwardOutcome, sendPage: boolean): void => {
    const bytesIn = this.bodyIn;
    this.release();
    if (this.slot) {
      // No answer came: a timeout, a refused or reset connection is the origin failing; a client that left is not.
      const e = out.upstreamError;
      if (e === 'timeout' || e === 'connect' || e === 'reset') this.p.origin.sample(this.origin!, this.head.source, performance.now() - this.sentAt, true);
      this.freeSlot();
    }
    this.origin!.queue.kick(); // its connection is free now (its place in the limit may have been given back before)
    if (sendPage && out.proxyReason) {
      const close = this.meter !== null && !this.req.complete;
      return this.answer({ status: out.status, reason: out.proxyReason, page: true, close }, (n) => this.observe('proxy', out.status, bytesIn, n, out.proxyReason!, out));
    }
    // A client that left mid-answer stays the proxy's outcome; what it took is billed all the same (streamed, each MiB).
    this.observe(out.clientAborted ? 'proxy' : 'passed', out.status, bytesIn, out.bytesOut, null, out, out.slowReader === true);
  };
  /** Bytes of its long answer that went out (Forwarding, each STREAM_TELL_BYTES): counted now as passed traffic. */
  streamed(n: number): void { this.p.tunnels.onBytes?.(this.domain!.name, 0, n); }

  /** The send deadline cut its client after it was observed (its response fitted in the read-ahead): told apart. */
  slowReader(): void { if (this.settled) this.p.detector.onSlowReader(this.head.source); }

  /** Waited for its answer far longer than the origin answers (a long poll, a long job): it gives its place in the
   *  limit back while it goes on (OriginGuard.tick), and its answer, whenever it comes, is no latency sample. */
  outlived(): void { this.outlivedAll = true; if (this.slot) this.freeSlot(); }

  private forwardUpgrade(): void {
    const up = this.rt.config.upstream;
    this.sentAt = performance.now();
    forwardUpgrade({
      req: this.req, socket: this.socket!, head: this.upgradeHead!, headers: this.upstreamHeaders(true), domain: this.domain!.name,
      order: this.p.upstreams.groups.get(this.domain!.name)!.order(), pages: this.p.pages, tunnels: this.p.tunnels,
      connectTimeoutMs: up.connectTimeoutMs, connectAttempts: up.connectAttempts, responseTimeoutMs: up.responseTimeoutMs, bodyTimeoutMs: up.bodyTimeoutMs, replaceErrorPages: this.domain!.proxyErrorPages,
    }, (out) => {
      this.release();
      this.observe(out.proxyReason ? 'proxy' : out.clientAborted ? 'proxy' : 'passed', out.status, this.head.headBytes, out.bytesOut, out.proxyReason, out);
    });
  }

  private upstreamHeaders(upgrade: boolean): string[] {
    const h = this.head;
    return toUpstreamHeaders(h.rawHeaders, { client: h.client, proto: h.tls ? 'https' : 'http', host: this.host }, upgrade);
  }

  /** Made only for a request that waits (body, queue): the common request allocates no closure for them. `fin`: its
   *  client half-closed while it waits for its turn; with no room at the origin, one that may have given up (a browser
   *  closing a connection sends no more than that FIN) is dropped as one that left. Answers due before it on the
   *  connection (pipelined) are cut with it: rare, and only while the domain is saturated. */
  private goneFn: (() => void) | null = null; private finFn: (() => void) | null = null;
  private get gone(): () => void { return this.goneFn ??= () => this.onGone(); }
  private get fin(): () => void { return this.finFn ??= () => { this.res!.off('close', this.gone); this.onGone(); this.reply.destroy(); }; }

  /** The client left while its body was read or its turn awaited. */
  private onGone(): void {
    if (this.finFn) this.req.socket.off('end', this.finFn);
    this.buffering?.cancel();
    if (this.waiter) this.origin!.queue.cancel(this.waiter);
    this.release();
    this.observe('proxy', 0, this.bodyIn, 0, null);
  }
  private get bodyIn(): number { return this.head.headBytes + (this.meter?.bytes ?? 0); } // whole: detection judges its size

  private leaveSlice(ms: number | null): void { if (this.newcomer) { this.newcomer = false; this.p.origin.leaveSlice(this.origin!, ms); } }

  private release(): void {
    // Still upstream with no answer (failed, its client left), or an upgrade answered: the origin worked on it.
    this.leaveSlice(this.slot || (this.res === null && this.sentAt > 0) ? performance.now() - this.sentAt : null);
    if (!this.holding) return;
    this.holding = false;
    this.p.budget.release(this.declared);
    this.p.perSource.release(this.head.source);
    const m = this.meter;
    if (m && !m.writableFinished) { this.req.unpipe(m); m.destroy(); }
  }

  /** Past the per-source cap, or no turn in the queue: a page for a browser; for a request the challenge policy exempts
   *  (an API client, which cannot use a page), 429 + Retry-After, JSON when it asked for JSON. */
  private refuseBusy(reason: 'overloaded' | 'queue-timeout' | 'queue-full' | 'newcomer-share', close: boolean): void {
    if (this.p.detector.exempt(this.head, this.domain!)) return this.refuse(exemptRefusal(this.head.headers.accept, 1, reason, close));
    this.refuse({ status: 503, reason, page: true, headers: { 'retry-after': '1' }, close });
  }

  /** The proxy's own answer; 'challenged' and 'blocked': the filter's (a challenge, a banned source told 429). */
  private refuse(a: Answer, outcome: 'proxy' | 'challenged' | 'blocked' = 'proxy'): void { this.answer(a, (n) => this.observe(outcome, a.status, this.bodyIn, n, outcome === 'proxy' ? a.reason : null)); }

  /** Writes the proxy's own answer, then observes it with the bytes of its body (its page is read first). */
  private answer(a: Answer, observe: (bytesOut: number) => void): void { this.reply.send(a, this.domain?.name ?? null).then(observe, () => { this.reply.destroy(); observe(0); }); }

  private observe(outcome: Outcome, status: number, bytesIn: number, bytesOut: number, proxyReason: ProxyReason | null, f?: Pick<ForwardOutcome, 'contentType' | 'upstreamError'>, slowReader = false): void {
    if (this.settled) return;
    this.settled = true;
    const h = this.head;
    const now = performance.now();
    // Its connection is idle again (one a connection cap may close to make room), unless it became a tunnel.
    if (!(this.res === null && outcome === 'passed')) requestEnded(connectionInfo(this.req.socket as Socket), now);
    this.p.observe({
      domain: this.domain?.name ?? null, source: h.source, client: h.client, method: h.method, path: h.url, status,
      bytesIn, bytesOut, durationMs: now - this.started, contentType: f?.contentType ?? null, outcome, proxyReason,
      upstreamError: f?.upstreamError ?? (outcome === 'passed' && status >= 500 ? '5xx' : null), newConnection: h.newConnection,
      queuedMs: this.queuedMs, upstreamMs: this.sentAt === 0 ? 0 : this.headersMs >= 0 ? this.headersMs : now - this.sentAt, noLatency: this.outlivedAll, upgrade: this.res === null, slowReader, toldIn: this.meter?.told ?? 0,
    });
  }
}
