// Forwarding one request over undici's Pool.dispatch, streaming both ways with
// explicit backpressure, with the connect retry and failover of SPEC.md §3:
// a connect attempt that times out is repeated (connectAttempts), then the next
// upstream is tried; a refused/unreachable upstream fails over at once. The
// request body has not been read by then, so every method can move on safely.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Upstream, UpstreamGroup } from './upstreams.ts';
import { toClientHeaders } from './headers.ts';
import { BodyLimitError } from '../limits/body-meter.ts';

export type UpstreamErrorKind = 'connect' | 'timeout' | 'reset' | '5xx' | null;

export interface ForwardOutcome {
  status: number;
  bytesOut: number;
  /** Set when the proxy answered instead of the upstream. */
  proxyReason: 'connect-timeout' | 'connect-refused' | 'upstream-timeout' | 'upstream-error' | 'upstream-page' | 'body-too-large' | 'body-too-slow' | null;
  upstreamError: UpstreamErrorKind;
  upstream: Upstream | null;
  contentType: string | null;
  clientAborted: boolean;
}

export interface ForwardRequest {
  req: IncomingMessage;
  res: ServerResponse;
  path: string;
  method: string;
  headers: string[];
  /** A body read whole at the edge (Buffer), or the client's stream. */
  body: Buffer | Readable | null;
  responseTimeoutMs: number;
  connectAttempts: number;
  /** The domain opted in (proxyErrorPages): the upstream's own 502/503/504 are replaced by the proxy's pages. */
  replaceErrorPages?: boolean;
  /** A client that leaves before the answer does not cut the upstream request: it runs until the upstream
   *  answers (then it is cut), so a capped domain counts the work its application is really doing. */
  finishOnClientAbort?: boolean;
}

const REPLACEABLE = new Set([502, 503, 504]);

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTDOWN', 'ENETDOWN']);
const RESET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

type ErrorClass = 'connect-timeout' | 'connect' | 'reset' | 'response-timeout' | 'body' | 'other';

/** Pure: what kind of failure an undici/net error is. */
export function classify(err: unknown): ErrorClass {
  if (err instanceof BodyLimitError) return 'body';
  const code = (err as { code?: string }).code ?? '';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT') return 'connect-timeout';
  if (CONNECT_ERRORS.has(code)) return 'connect';
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'response-timeout';
  if (RESET_ERRORS.has(code)) return 'reset';
  return 'other';
}

/** Runs the request; `done` is called exactly once, after the client response is finished or abandoned. */
export function forward(fr: ForwardRequest, group: UpstreamGroup, done: (o: ForwardOutcome, sendPage: boolean) => void): void {
  new Forwarding(fr, group.order(), done).start();
}

class Forwarding implements Dispatcher.DispatchHandler {
  private idx = 0;
  private attempt = 1;
  private controller: Dispatcher.DispatchController | null = null;
  private responded = false;
  private finished = false;
  private bytesOut = 0;
  private contentType: string | null = null;
  private status = 0;
  private lastError: ErrorClass | null = null;
  private clientGone = false;
  private waitingDrain = false;
  private readonly onDrain = () => { this.waitingDrain = false; this.controller?.resume(); };

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
    if (fr.body && !Buffer.isBuffer(fr.body)) fr.body.on('error', (e) => { if (!this.responded) this.fail(e); });
  }

  private get upstream(): Upstream { return this.order[this.idx]; }

  start(): void {
    const { fr } = this;
    this.controller = null;
    this.upstream.pool.dispatch({
      path: fr.path, method: fr.method, headers: fr.headers, body: fr.body,
      headersTimeout: fr.responseTimeoutMs, idempotent: SAFE_METHODS.has(fr.method),
    }, this);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.finished) controller.abort(new Error('client closed'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    if (statusCode < 200 || this.finished) return; // 1xx interim responses are not relayed
    if (this.clientGone) {
      // The client left while the upstream worked on its request: the slot is free now, the answer goes nowhere.
      this.upstream.report(true);
      this.finish(null, false);
      controller.abort(new Error('client closed'));
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
    res.writeHead(statusCode, statusMessage || undefined, toClientHeaders(headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytesOut += chunk.length;
    // undici may hand over a chunk it had already parsed after pause(): one drain listener is enough.
    if (!this.fr.res.write(chunk) && !this.waitingDrain) {
      this.waitingDrain = true;
      controller.pause();
      this.fr.res.once('drain', this.onDrain);
    }
  }

  onResponseEnd(): void {
    this.fr.res.end();
    this.finish(null, false);
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.fail(err);
  }

  private fail(err: unknown): void {
    if (this.finished) return;
    if (this.clientGone) { this.finish(null, false); return; }
    const kind = classify(err);
    if (this.responded) {
      // Mid-body failure: the status line is gone, so the only honest signal is a cut connection.
      this.fr.res.destroy();
      this.finish('reset', false);
      return;
    }
    if (kind === 'body') {
      this.controller?.abort(err as Error);
      this.lastError = 'body';
      this.finish(null, true, (err as BodyLimitError).reason);
      return;
    }
    this.lastError = kind;
    // A body held whole can be sent again; a stream only if no attempt has read from it.
    const bodyUntouched = !this.fr.body || Buffer.isBuffer(this.fr.body) || !this.fr.body.readableDidRead;
    if (kind === 'connect-timeout') {
      if (this.attempt < this.fr.connectAttempts) { this.attempt++; this.start(); return; }
    }
    if (kind === 'connect-timeout' || kind === 'connect' || kind === 'reset') {
      this.upstream.report(false);
      const retryable = bodyUntouched && (kind !== 'reset' || SAFE_METHODS.has(this.fr.method));
      if (retryable && this.idx + 1 < this.order.length) { this.idx++; this.attempt = 1; this.start(); return; }
    }
    if (kind === 'response-timeout') this.upstream.report(false);
    this.finish(kind === 'response-timeout' ? 'timeout' : kind === 'reset' || kind === 'other' ? 'reset' : 'connect', true);
  }

  private finish(upstreamError: UpstreamErrorKind, sendPage: boolean, bodyReason?: 'body-too-large' | 'body-too-slow' | 'upstream-page'): void {
    if (this.finished) return;
    this.finished = true;
    this.fr.res.off('drain', this.onDrain);
    const clientAborted = this.clientGone;
    const proxyReason: ForwardOutcome['proxyReason'] = !sendPage || clientAborted ? null
      : bodyReason ?? (upstreamError === 'timeout' ? 'upstream-timeout'
        : this.lastError === 'connect-timeout' ? 'connect-timeout'
          : this.lastError === 'connect' ? 'connect-refused' : 'upstream-error');
    const status = proxyReason === null || proxyReason === 'upstream-page' ? this.status
      : proxyReason === 'upstream-timeout' ? 504 : proxyReason === 'body-too-large' ? 413 : proxyReason === 'body-too-slow' ? 408 : 502;
    this.done({
      status, bytesOut: this.bytesOut, proxyReason, upstreamError: proxyReason === 'body-too-large' || proxyReason === 'body-too-slow' ? null : upstreamError,
      upstream: this.order[this.idx] ?? null, contentType: this.contentType, clientAborted,
    }, proxyReason !== null);
  }
}
