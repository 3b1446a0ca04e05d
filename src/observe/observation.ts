// What happened to one request, told once by the pipeline and read by
// detection and statistics. Reasons are a closed, typed set: a stage that
// renames one breaks the build instead of silently switching a rule off.

export type Outcome = 'passed' | 'proxy' | 'blocked' | 'challenged';

/** Why the proxy answered itself (the X-Scrubber header of its answer). */
export type ProxyReason =
  | 'connect-timeout' | 'connect-refused' | 'upstream-timeout' | 'upstream-error' | 'upstream-page' | 'body-too-large' | 'post-budget'
  | 'maintenance' | 'unknown-host' | 'bad-host' | 'bad-request' | 'headers-too-large' | 'overloaded'
  | 'queue-timeout' | 'queue-full' | 'newcomer-share'
  | 'request-timeout' | 'body-too-slow' | 'method-not-allowed' | 'challenge' | 'rate-limited' | 'shutting-down'
  | 'expectation-failed' | 'proxy-error';

export type UpstreamError = 'connect' | 'timeout' | 'reset' | '5xx' | null;

/** One finished request, as observed by the pipeline. */
export interface Observation {
  domain: string | null;
  source: string;
  client: string;
  method: string;
  path: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  contentType: string | null;
  outcome: Outcome;
  /** The proxy's own reason when it answered (X-Scrubber). */
  proxyReason: ProxyReason | null;
  /** A failure of the upstream; never set for a failure the proxy caused itself. */
  upstreamError: UpstreamError;
  newConnection: boolean;
  /** Time it waited in the domain's upstream queue; 0 when it did not wait. */
  queuedMs: number;
  /** Time from handing it to the upstream to its answer's headers (or its failure); 0 when it never went upstream.
   *  Unlike durationMs, it leaves out the client's upload (read at the edge first), the queue, and the download (the
   *  client's link, not the application's work: until 2026-11-29 a slow download read as an expensive request). */
  upstreamMs: number;
  /** Of bytesIn, what statistics were told already as its body went upstream (BodyMeter.onStep): bytesIn stays whole
   *  (detection judges a body's size), statistics count the rest. */
  toldIn?: number;
  /** Its time says nothing of the application's latency or cost: a request that outlived every answer (a long poll,
   *  held by the application on purpose), a passthrough tunnel. Left out of attack mode's latency and of `expensive`. */
  noLatency?: boolean;
  /** The client read its answer so slowly that the send deadline cut it (it held an upstream connection). */
  slowReader?: boolean;
  /** An upgrade (WebSocket) request: its "answer" is a tunnel. */
  upgrade?: boolean;
}

/** Refused for the request itself (protocol hygiene, a head too large, what Node will not send on): malformed,
 *  whether or not its Host names a domain. */
export const isMalformed = (r: ProxyReason | null): boolean => r === 'bad-request' || r === 'headers-too-large' || r === 'method-not-allowed';

/** Refused because the domain's upstream was full: the origin's capacity, not the source's doing. */
export const isQueueRefusal = (r: ProxyReason | null): boolean => r === 'queue-timeout' || r === 'queue-full';

/** An application's answer that says it (or the gateway in front of it: nginx before php-fpm with a full backlog)
 *  cannot serve now: 502/503/504. */
export const isOverloadStatus = (status: number): boolean => status === 502 || status === 503 || status === 504;

/**
 * Whether the request tells of an upstream in trouble (for attack mode): it failed to connect, timed out or was
 * reset, the application answered 502/503/504 (relayed or replaced by the proxy's page), or the domain's full
 * upstream queue had to refuse it. Never a failure the proxy caused itself.
 */
export function upstreamInTrouble(o: Observation): boolean {
  if (o.upstreamError !== null && o.upstreamError !== '5xx') return true;
  if ((o.outcome === 'passed' || o.proxyReason === 'upstream-page') && isOverloadStatus(o.status)) return true;
  return isQueueRefusal(o.proxyReason);
}

/** The application answered 500: a bug of one of its pages, or (in bulk, far above its usual share) an application
 *  failing fast under load (its database pool used up). Attack mode judges it against the domain's learned share. */
export const isAppError = (o: Observation): boolean => o.outcome === 'passed' && o.status === 500;
