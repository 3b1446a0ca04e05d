// Forwarding one request over undici's Pool.dispatch, streaming both ways with
// explicit backpressure, with the connect retry and failover of SPEC.md §3:
// a connect attempt that times out is repeated (connectAttempts), then the next
// upstream is tried; a refused/unreachable upstream fails over at once. The
// request body has not been read by then, so every method can move on safely.
import type { Dispatcher } from 'undici';
import type { Upstream, UpstreamGroup } from './upstreams.ts';
import type { UpstreamErrorKind, ForwardOutcome, ForwardRequest } from './forward-types.ts';
import { toClientHeaders } from './headers.ts';
import { BodyLimitError } from '../limits/body-meter.ts';
import { classify, SAFE_METHODS, type ErrorClass } from './errors.ts';
import { ReadAhead, SendDeadline, SEND_TIMEOUT_MS, readAheadBudget } from './slow-client.ts';
import { answerOptionsStar } from './options-star.ts';

export { classify, SEND_TIMEOUT_MS, readAheadBudget };

import { READ_AHEAD_BYTES, STREAM_TELL_BYTES } from './forward-types.ts';
export { READ_AHEAD_BYTES, STREAM_TELL_BYTES };
type SocketInfo = { socket?: { bytesRead?: number } }; // what undici's SocketError tells of its connection
export type { UpstreamErrorKind, ForwardOutcome, ForwardRequest } from './forward-types.ts';

const REPLACEABLE = new Set([502, 503, 504]);
const UNWRITABLE_REASON = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * Runs the request; `done` is called exactly once, when the upstream part is over: the response has been read
 * whole (the client may still be taking the read-ahead, under the send deadline) or abandoned.
 */
export function forward(fr: ForwardRequest, group: UpstreamGroup | undefined, done: (o: ForwardOutcome, sendPage: boolean) => void): void {
  // No group: a reload removed the domain while the request waited (its body, its turn). It is answered as the new
  // config answers its Host, not sent to upstreams whose pools the reload closed (nor left to throw here).
  if (!group) return done({ status: 421, bytesOut: 0, proxyReason: 'unknown-host', upstreamError: null, upstream: null, contentType: null, clientAborted: false, slowReader: false }, true);
  if (fr.method === 'OPTIONS' && fr.path === '*') { answerOptionsStar(fr); return done({ status: 200, bytesOut: 0, proxyReason: null, upstreamError: null, upstream: null, contentType: null, clientAborted: false, slowReader: false }, false); }
  new Forwarding(fr, group.order(), done).start();
}

class Forwarding implements Dispatcher.DispatchHandler {
  private idx = 0;
  private attempt = 1;
  /** A reset met on the way was tried once more on the same upstream (see fail). */
  private againOnReset = false;
  private controller: Dispatcher.DispatchController | null = null;
  private responded = false; private finished = false;
  private bytesOut = 0; private told = 0; private contentType: string | null = null; private status = 0;
  private lastError: ErrorClass | null = null;
  private clientGone = false; private waitingDrain = false; private slowReader = false;
  private bodyError: Error | null = null; // the client's body failed (too large, too slow) after the upstream's headers
  /** The proxy's own response deadline: undici's timers are coarse (up to a second late). */
  private responseTimer: NodeJS.Timeout | null = null;
  private readonly send: SendDeadline;
  private readonly readAhead: ReadAhead;
  /** Made on the first pause only: most responses never wait for their client. */
  private onDrain: (() => void) | null = null;
  private on: Upstream | null = null; // the upstream it is counted on (Upstream.busy), from dispatch until finish
  /** In undici's hands with no connection yet (connecting, or its queue): undici calls back whatever happens. */
  private queued = false;
  /** The whole request (its body too) went out on the connection (undici's onRequestSent). */
  private requestSent = false;

  /** @internal the response timer's callback (a module function with an argument: no closure per request). */
  onResponseTimeout(): void {
    this.responseTimer = null;
    // A body still coming from the client (its pace is the edge's business, limits.minBodyRate) is not an upstream
    // that fails to answer.
    const body = this.fr.body;
    if (body && !Buffer.isBuffer(body) && !body.readableEnded && !body.destroyed) {
      this.responseTimer = setTimeout(responseTimeout, this.fr.responseTimeoutMs, this);
      return;
    }
    const controller = this.controller;
    // Fail first (the 504 and the upstream's report), then cut: abort() calls back into onResponseError.
    this.fail(Object.assign(new Error('no response headers within responseTimeoutMs'), { code: 'UND_ERR_HEADERS_TIMEOUT' }));
    controller?.abort(new Error('response timeout'));
  }

  private readonly fr: ForwardRequest;
  private readonly order: Upstream[];
  private readonly done: (o: ForwardOutcome, sendPage: boolean) => void;

  constructor(fr: ForwardRequest, order: Upstream[], done: (o: ForwardOutcome, sendPage: boolean) => void) {
    this.fr = fr;
    this.order = order;
    this.done = done;
    fr.res.on('close', () => {
      if (this.finished) return;
      // An application that took the request works on it whether or not the client is still there (threads and
      // workers rarely notice a closed socket): freeing its slot now would let the next waiter in on top of it,
      // and a queue of clients about to give up would pile orphans onto the application (HAProxy keeps the server
      // request too, unless abortonclose). Only when the whole request was sent: a half-sent body would never end.
      if (this.fr.finishOnClientAbort && !this.responded && this.controller && (!this.fr.body || Buffer.isBuffer(this.fr.body) || this.fr.req.complete)) {
        this.clientGone = true;
        return;
      }
      // Finish first: abort() calls back into onResponseError synchronously, and a client
      // that left is neither an upstream failure nor a reason for a 502 page.
      this.clientGone = true;
      this.finish(null, false);
      this.controller?.abort(new Error('client closed'));
    });
    // A client that took no byte in a whole send deadline is cut: that frees its buffer and (res 'close') the upstream.
    this.readAhead = new ReadAhead(fr.res, fr.readAheadBytes ?? READ_AHEAD_BYTES);
    this.send = new SendDeadline(fr.res, fr.sendTimeoutMs ?? SEND_TIMEOUT_MS, this);
    if (fr.body && !Buffer.isBuffer(fr.body)) {
      fr.body.on('error', (e) => { if (this.responded) this.bodyError = e; else this.fail(e); }); // then: see fail()
      // The deadline counts from the end of a streamed body (no 'data' listener here: it would consume the stream).
      fr.body.once('end', () => { this.responseTimer?.refresh(); });
    }
  }

  private get upstream(): Upstream { return this.order[this.idx]; }

  /** @internal the send deadline cut the client (no byte taken for sendTimeoutMs) */ onStalled(): void { this.slowReader = true; this.fr.onSlowReader?.(); this.fr.listener?.slowReader?.(); }

  start(): void {
    const { fr } = this;
    this.controller = null;
    this.requestSent = false;
    this.stopResponseTimer();
    let up = this.upstream;
    // Rebuilt by a reload since the order was made (a setting changed): the old pool takes nothing new.
    while (up.replacedBy) up = this.order[this.idx] = up.replacedBy;
    if (this.on) this.on.busy--; // a retry: counted on the next one
    // All its connections in use (a failover only): it waits in undici's queue, timed from now (and again once on one).
    const waits = up.full;
    (this.on = up).busy++;
    this.queued = true;
    up.pool.dispatch({
      path: fr.path, method: fr.method, headers: fr.headers, body: fr.body,
      // The name an HTTPS upstream is reached by (TLS SNI, and the name its certificate is verified for) is the
      // domain's, as the connector and the WebSocket path say. Left out, undici takes it from each request's Host (an
      // alias, a name the certificate may not carry) and closes a connection whenever it differs from the one before.
      // Not for plain HTTP: there undici would connect to the name itself when it is an IP address (a domain named
      // by its address). (A request option undici reads, core/request.js, that its types leave out;
      // test/https.test.ts holds it.)
      servername: up.tls ? up.domain.name : undefined,
      // Only a backstop: the proxy's own timer (armed when the request goes on a connection, as undici's is) fires first.
      headersTimeout: fr.responseTimeoutMs > 0 ? fr.responseTimeoutMs + 2000 : 0, idempotent: SAFE_METHODS.has(fr.method),
    } as Dispatcher.DispatchOptions, this);
    if (waits && fr.responseTimeoutMs > 0 && this.controller === null && !this.finished) this.responseTimer = setTimeout(responseTimeout, fr.responseTimeoutMs, this);
  }

  /** The next upstream in the order, one with a free connection first (a full one would hold the request in its queue). */
  private failover(): void {
    const rest = this.order.splice(this.idx + 1);
    this.order.push(...rest.filter((u) => !u.full), ...rest.filter((u) => u.full));
    this.idx++; this.attempt = 1; this.start();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    this.queued = false;
    if (this.finished) { this.letGo(); controller.abort(new Error('client closed')); return; }
    this.stopResponseTimer();
    if (this.fr.responseTimeoutMs > 0) this.responseTimer = setTimeout(responseTimeout, this.fr.responseTimeoutMs, this);
  }

  onRequestSent(): void { this.requestSent = true; }

  private stopResponseTimer(): void {
    if (this.responseTimer) { clearTimeout(this.responseTimer); this.responseTimer = null; }
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    if (statusCode < 200 || this.finished) return; // 1xx interim responses are not relayed
    this.stopResponseTimer();
    this.fr.listener?.upstreamAnswered(statusCode);
    if (this.clientGone) {
      // The client left while the upstream worked on its request: the slot is free now, the answer goes nowhere.
      this.upstream.report(true);
      this.finish(null, false);
      controller.abort(new Error('client closed'));
      return;
    }
    // A transfer coding other than chunked (gzip, chunked): undici undoes the chunking only, and the body would reach the
    // client as if it were plain. Refused as nginx does ("upstream sent unknown Transfer-Encoding"): a 502.
    const te = headers['transfer-encoding'];
    if (te !== undefined && !/^\s*chunked\s*$/i.test(Array.isArray(te) ? te.join(',') : te)) {
      this.upstream.report(true); // it answered: counted as its 5xx would be, not as a failing upstream
      this.lastError = 'other';
      this.finish('5xx', true);
      controller.abort(new Error('unsupported transfer coding'));
      return;
    }
    this.responded = true;
    this.status = statusCode;
    const ct = headers['content-type'];
    this.contentType = typeof ct === 'string' ? ct : null;
    this.upstream.report(true);
    if (this.fr.replaceErrorPages && REPLACEABLE.has(statusCode)) {
      // Nothing has been sent to the client yet: drop the application's page, send ours with its status.
      this.finish('5xx', true, 'upstream-page');
      controller.abort(new Error('replaced by the proxy page'));
      return;
    }
    const { res } = this.fr;
    if (res.destroyed) { controller.abort(new Error('client closed')); return; }
    // The upstream answered before the client finished sending its body: the rest of that body
    // would be read as the next request on this connection, so the client is told not to reuse it.
    if (this.fr.body && !this.fr.req.complete) res.shouldKeepAlive = false;
    // undici decodes the reason phrase as UTF-8, so a Latin-1 byte in it (obs-text: "404 Non trouvé") comes as U+FFFD,
    // which writeHead refuses (its checkInvalidHeaderChar): the response would be lost. Node's phrase stands in then.
    res.writeHead(statusCode, statusMessage && !UNWRITABLE_REASON.test(statusMessage) ? statusMessage : undefined, toClientHeaders(headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytesOut += chunk.length;
    const { res } = this.fr;
    res.write(chunk);
    // Read ahead: the upstream is paused only once more than readAheadBytes (or the process-wide budget) wait for
    // the client; write() alone says false past 16 KiB, which ties the upstream connection to the client's pace.
    // 'drain' comes when the client has taken it all; undici may hand over a chunk it had parsed after pause():
    // one listener is enough.
    if (!this.readAhead.mayContinue() && !this.waitingDrain) {
      this.waitingDrain = true;
      controller.pause();
      this.onDrain ??= () => { this.waitingDrain = false; if (!this.finished) this.controller?.resume(); };
      res.once('drain', this.onDrain);
    }
    this.send.wrote(chunk.length);
    if (this.bytesOut - this.told >= STREAM_TELL_BYTES) { const n = this.bytesOut - this.told; this.told = this.bytesOut; this.fr.listener?.streamed?.(n); }
  }

  onResponseEnd(): void {
    this.fr.res.end();
    // The upstream is done (its connection goes back to the pool now); the client may still be reading what was
    // read ahead, under the send deadline.
    this.send.wrote(0);
    this.finish(null, false);
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.queued = false;
    if (this.finished) this.letGo();
    this.fail(err);
  }

  /** Its place on the upstream is given back once undici holds nothing of it: a request left while it was still
   *  connecting (its client gone, its deadline past) keeps the connection attempt, so the upstream has no room yet. */
  private letGo(): void { if (this.on && !this.queued) { this.on.busy--; this.on = null; } }

  private fail(err: unknown): void {
    if (this.finished) return;
    if (this.clientGone) { this.finish(null, false); return; }
    // Failed before the request went on a connection (undici starts it on a connected socket): a TLS handshake reset,
    // a certificate that does not verify. The upstream never saw it: a failed connect, for health and failover alike.
    const k = classify(err), kind = this.controller === null && (k === 'reset' || k === 'other') ? 'connect' : k;
    if (this.responded) {
      // Mid-body failure: the status line is gone, so the only honest signal is a cut connection. Caused by the client's
      // own body (answered early), it is no upstream failure: a client would make a healthy upstream read as failing.
      this.fr.res.destroy();
      this.clientGone = this.bodyError !== null;
      this.finish(this.clientGone ? null : 'reset', false);
      if ((this.bodyError as BodyLimitError | null)?.reason === 'body-too-slow') this.fr.listener?.slowReader?.();
      return;
    }
    if (kind === 'invalid') {
      // Refused by undici before a byte went out: the upstream is not at fault (no report, no upstreamError).
      this.lastError = 'invalid';
      this.finish(null, true, 'bad-request');
      return;
    }
    if (kind === 'body') {
      this.controller?.abort(err as Error);
      this.lastError = 'body';
      this.finish(null, true, (err as BodyLimitError).reason);
      return;
    }
    this.lastError = kind;
    if (kind === 'reset' && this.controller !== null && !this.requestSent && this.fr.body) {
      // Cut while its body was still going out: an upstream that answered early (a 413, a 401) and closed, whose
      // answer undici drops when its next write fails (a known gap: the client gets 502). It refused the body: no
      // failing upstream, for its health and its limit alike.
      this.finish(null, true);
      return;
    }
    // A body held whole can be sent again; a stream only if no attempt has read from it.
    const bodyUntouched = !this.fr.body || Buffer.isBuffer(this.fr.body) || !this.fr.body.readableDidRead;
    if (kind === 'connect-timeout') {
      if (this.attempt < this.fr.connectAttempts) { this.attempt++; this.start(); return; }
    }
    if (kind === 'reset' && !this.againOnReset && bodyUntouched && SAFE_METHODS.has(this.fr.method) && ((err as SocketInfo).socket?.bytesRead ?? 0) > 0) {
      // The kept-alive race: the upstream closed an idle connection (it had answered on it: bytes read) as this request
      // went out on it. Tried once more on a new connection, not counted against its health (as nginx).
      this.againOnReset = true;
      this.start();
      return;
    }
    if (kind === 'connect-timeout' || kind === 'connect' || kind === 'reset') {
      this.upstream.report(false);
      const retryable = bodyUntouched && (kind !== 'reset' || SAFE_METHODS.has(this.fr.method));
      if (retryable && this.idx + 1 < this.order.length) { this.failover(); return; }
    }
    if (kind === 'response-timeout') this.upstream.report(false);
    this.finish(kind === 'response-timeout' ? 'timeout' : kind === 'reset' || kind === 'other' ? 'reset' : 'connect', true);
  }

  private finish(upstreamError: UpstreamErrorKind, sendPage: boolean, bodyReason?: 'body-too-large' | 'body-too-slow' | 'upstream-page' | 'bad-request'): void {
    if (this.finished) return;
    this.finished = true;
    this.stopResponseTimer();
    this.letGo();
    if (this.onDrain) this.fr.res.off('drain', this.onDrain);
    const clientAborted = this.clientGone;
    const proxyReason: ForwardOutcome['proxyReason'] = !sendPage || clientAborted ? null
      : bodyReason ?? (upstreamError === 'timeout' ? 'upstream-timeout'
        : this.lastError === 'connect-timeout' ? 'connect-timeout'
          : this.lastError === 'connect' ? 'connect-refused' : 'upstream-error');
    const status = proxyReason === null || proxyReason === 'upstream-page' ? this.status
      : proxyReason === 'upstream-timeout' ? 504 : proxyReason === 'body-too-large' ? 413 : proxyReason === 'body-too-slow' ? 408
        : proxyReason === 'bad-request' ? 400 : 502;
    const ours = proxyReason === 'body-too-large' || proxyReason === 'body-too-slow' || proxyReason === 'bad-request';
    this.done({
      status, bytesOut: this.bytesOut - this.told, proxyReason, upstreamError: ours ? null : upstreamError,
      upstream: this.order[this.idx] ?? null, contentType: this.contentType, clientAborted, slowReader: this.slowReader,
    }, proxyReason !== null);
  }
}

function responseTimeout(f: Forwarding): void { f.onResponseTimeout(); }
