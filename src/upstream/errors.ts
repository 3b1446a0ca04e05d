// What kind of failure an undici or socket error is, for the forward handler's
// retry, failover and the upstream's health. Pure.
import { BodyLimitError } from '../limits/body-meter.ts';

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTDOWN', 'ENETDOWN']);
const RESET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
export const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

// undici's own refusals of a request before anything is sent (a path it cannot write, a header it does not
// support, a header value it will not put on the wire): the upstream never saw them, so they are not its failures.
const INVALID_ERRORS = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_CHAR', 'ERR_INVALID_HTTP_TOKEN']);

export type ErrorClass = 'connect-timeout' | 'connect' | 'reset' | 'response-timeout' | 'body' | 'invalid' | 'other';

/** Pure: what kind of failure an undici/net error is. */
export function classify(err: unknown): ErrorClass {
  if (err instanceof BodyLimitError) return 'body';
  const code = (err as { code?: string }).code ?? '';
  if (INVALID_ERRORS.has(code)) return 'invalid';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT') return 'connect-timeout';
  if (CONNECT_ERRORS.has(code)) return 'connect';
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'response-timeout';
  if (RESET_ERRORS.has(code)) return 'reset';
  return 'other';
}
