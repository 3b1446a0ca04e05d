// What a connection gets when Node's HTTP/1.1 parser refuses its request (the
// server's 'clientError'): a head too large, a head or body too slow, bytes
// that are not HTTP. Counted against its source (the filter's malformed and
// slow rules), never logged per request; answered with the proxy's raw page
// and closed, unless an answer to an earlier request is due on it first.
import type http from 'node:http';
import type net from 'node:net';
import { connectionInfo } from './connections.ts';
import { endWith, rawResponse } from '../respond/reply.ts';

const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'headers-too-large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request-timeout'],
  HPE_HEADERS_TIMEOUT: [408, 'request-timeout'],
};

export function answerClientError(err: NodeJS.ErrnoException, socket: net.Socket, filter: { onClientError?(source: string, code: string): void }): void {
  // Bytes pipelined after a request that asked to close (RFC 9112 §9.6): the answer in flight still goes out, then
  // Node closes; destroying here would lose an answer the upstream executed.
  const msg = (socket as net.Socket & { _httpMessage?: http.ServerResponse })._httpMessage;
  if (err.code === 'HPE_CLOSED_CONNECTION' && msg) return;
  // A head deadline on a connection that sent nothing is not a slowloris: browsers open connections ahead of need
  // (preconnect) and drop them unused. bytesRead counts what the HTTP parser was given (plaintext on TLS), and a
  // kept-alive connection between requests is not under the head deadline. Idle connections are bounded by the
  // per-source connection cap, and their churn is counted at accept.
  const idle = socket.bytesRead === 0 && (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT');
  if (!idle) filter.onClientError?.(connectionInfo(socket).source, err.code ?? 'unknown');
  // A body still coming past limits.requestTimeoutMs is told so (408, as nginx), unless an answer is due first.
  if (socket.writable && (!msg || (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && !msg.headersSent && !msg.req.complete))) {
    const [status, reason] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'bad-request'];
    endWith(socket, rawResponse(status, reason));
  } else socket.destroy();
}
