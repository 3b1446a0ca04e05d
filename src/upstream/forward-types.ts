// What a forwarding is given and what it reports (upstream/forward.ts runs it): the request as the flow hands it
// over, and the outcome the flow observes.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Upstream } from './upstreams.ts';

export type UpstreamErrorKind = 'connect' | 'timeout' | 'reset' | '5xx' | null;

export interface ForwardOutcome {
  status: number; bytesOut: number;
  /** Set when the proxy answered instead of the upstream. */
  proxyReason: 'connect-timeout' | 'connect-refused' | 'upstream-timeout' | 'upstream-error' | 'upstream-page' | 'body-too-large' | 'body-too-slow' | 'bad-request' | 'unknown-host' | null;
  upstreamError: UpstreamErrorKind;
  upstream: Upstream | null;
  contentType: string | null;
  clientAborted: boolean;
  /** The client took no byte of its response for sendTimeoutMs and was cut: a signal against its source. */
  slowReader: boolean;
}

export interface ForwardRequest {
  req: IncomingMessage;
  res: ServerResponse;
  path: string; method: string;
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
  /** Bytes of response read ahead of the client (default READ_AHEAD_BYTES). */
  readAheadBytes?: number;
  /** No progress sending to the client for this long → the client connection is cut (default SEND_TIMEOUT_MS). */
  sendTimeoutMs?: number;
  /** Called when the send deadline cuts a client, also after `done` (the upstream part may be over by then). */
  onSlowReader?: () => void;
  /** Told when the upstream's response headers arrive: the origin's part is done; and when the send deadline cut the
   *  client, also after `done` (an object, so nothing is bound per request). */
  /** `streamed`: bytes of a long response told before it ends (each STREAM_TELL_BYTES): the outcome's bytesOut is the rest. */
  listener?: { upstreamAnswered(status: number): void; slowReader?(): void; streamed?(bytes: number): void };
}

/**
 * How much of an upstream response is read ahead of a slow client (nginx's proxy_buffering, bounded): a response
 * that fits is taken off the upstream at its own speed, so its connection goes back to the pool however slowly the
 * client reads; a longer one pauses the upstream once this much waits for the client.
 */
export const READ_AHEAD_BYTES = 1024 * 1024;

/** A long response's bytes are told to statistics as they go, each time this many more went out: a download or a
 *  stream lasting hours counts in the 3-minute samples (and the month) it used, not all in the one where it ended. */
export const STREAM_TELL_BYTES = 1024 * 1024;
