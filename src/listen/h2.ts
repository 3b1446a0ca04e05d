// HTTP/2 streams into the one request flow. The request head
// (src/http/head.ts) and the pipeline read Node's HTTP/1.1 objects; the
// compat layer's are close but not the same:
// - the request carries its host in :authority and its method, path and
//   scheme in pseudo-headers, which must never be forwarded as header lines;
//   its socket throws on destroy() and is not `encrypted` (asHttp1Head);
// - the response warns or throws on what HTTP/1.1 responses carry (a reason
//   phrase, connection headers), resets a cut stream as if it had ended, and
//   batches writes so that progress is invisible to the send deadline
//   (asHttp1Reply).
// Going to the native stream API would remove this layer (and its cost).
import type http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import { connectionInfo, tagConnectionInfo } from './connections.ts';

export function asHttp1Head(req: http2.Http2ServerRequest): http.IncomingMessage {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let host: string | null = null;
  let cookie = -1;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    if (name.length === 4 && name.toLowerCase() === 'host') host = raw[i + 1];
    if (name.length === 6 && name.toLowerCase() === 'cookie') {
      // Browsers send each cookie as its own field on HTTP/2 (HPACK indexes them one by one); an HTTP/1.1 upstream
      // must get one line joined by "; " (RFC 9113 §8.2.3), or it reads only the first or joins them with ", ".
      if (cookie >= 0) { out[cookie] += '; ' + raw[i + 1]; continue; }
      cookie = out.length + 1;
    }
    out.push(name, raw[i + 1]);
  }
  // HTTP/2 frames the body itself: a body without content-length is what HTTP/1.1 calls chunked, and the
  // pipeline reads a body only when one of the two is declared (transfer-encoding is hop-by-hop: never forwarded).
  if (!req.stream.endAfterHeaders && req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) {
    out.push('transfer-encoding', 'chunked');
    req.headers['transfer-encoding'] = 'chunked';
  }
  const authority = req.headers[':authority'];
  if (host === null && typeof authority === 'string') {
    out.unshift('host', authority);
    req.headers.host = authority;
  } else if (host !== null && typeof authority === 'string' && host.toLowerCase() !== authority.toLowerCase()) {
    // A Host that names another site than :authority is malformed (RFC 9113 §8.3.1): as two Host lines, the flow's
    // check refuses it (400) as it does on HTTP/1.1, rather than routing by one and logging the other.
    out.push('host', authority);
  }
  // Own properties shadow the compat getters; the compat object's method and url keep reading the pseudo-headers.
  Object.defineProperty(req, 'rawHeaders', { value: out, configurable: true });
  Object.defineProperty(req, 'socket', { value: socketFacade(req), configurable: true });
  return req as unknown as http.IncomingMessage;
}

/**
 * What the pipeline and the filter ask of req.socket, for a stream. The compat
 * socket throws on destroy() (ERR_HTTP2_NO_SOCKET_MANIPULATION) and says it is
 * not `encrypted`; a request that gets its source banned must end the whole
 * connection, as on HTTP/1.1.
 */
function socketFacade(req: http2.Http2ServerRequest): net.Socket {
  const session = req.stream.session;
  const info = connectionInfo(req.socket as unknown as net.Socket);
  const facade = {
    encrypted: true,
    remoteAddress: info.client,
    destroy: () => { session?.destroy(); return facade; },
    destroyed: false,
  };
  Object.defineProperty(facade, 'destroyed', { get: () => session?.destroyed ?? true });
  return tagConnectionInfo(facade, info) as unknown as net.Socket;
}

/** CONNECT on HTTP/2 reaches the server's 'connect' listener with the compat response, not a socket: raw HTTP/1.1
 *  bytes written to it would be the body of a 200. It gets the 405 an HTTP/1.1 CONNECT gets. */
export function refuseConnect(res: http2.Http2ServerResponse): void {
  res.writeHead(405, { 'x-scrubber': 'method-not-allowed', 'content-length': 0 });
  res.end();
}

/** Headers that say something about an HTTP/1.1 connection; on HTTP/2 node:http2 throws on them (keep-alive, upgrade...) or warns and drops them (connection). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);
/** Response headers node:http2 takes once only (it throws ERR_HTTP2_HEADER_SINGLE_VALUE on a list, and the stream is
 *  reset): an upstream that repeats one (two Content-Type lines, a CORS header added by a middleware and by the
 *  application) is relayed over HTTP/1.1 as it is, and over HTTP/2 with its last value, the one browsers go by. */
const SINGLE_VALUE = new Set(['access-control-allow-credentials', 'access-control-max-age', 'access-control-request-method', 'age',
  'authorization', 'content-encoding', 'content-language', 'content-length', 'content-location', 'content-md5', 'content-range',
  'content-type', 'date', 'dnt', 'etag', 'expires', 'from', 'host', 'if-match', 'if-modified-since', 'if-none-match', 'if-range',
  'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'range', 'referer', 'retry-after', 'tk',
  'upgrade-insecure-requests', 'user-agent', 'x-content-type-options']); // node:http2's own list (lib/internal/http2/util.js)

function h2Headers(headers: unknown): Record<string, unknown> | undefined {
  if (headers === undefined || headers === null || typeof headers !== 'object') return undefined;
  const out: Record<string, unknown> = {};
  // The pipeline always passes an object (forward.ts, reply.ts), never the raw [name, value] list form.
  for (const [k, v] of Object.entries(headers as Record<string, unknown>)) {
    const name = k.toLowerCase();
    if (!CONNECTION_SPECIFIC.has(name)) out[k] = Array.isArray(v) && SINGLE_VALUE.has(name) ? v[v.length - 1] : v;
  }
  return out;
}

/**
 * The compat response with the HTTP/1.1 habits of the pipeline made harmless.
 * The pipeline passes the upstream's reason phrase (undici always has one) and
 * sets "Connection: close" on its own error answers; on HTTP/2 a status message
 * and connection headers do not exist (RFC 9113 §8.2.2, §8.3.2) and the compat
 * layer answers them with an UnsupportedWarning on stderr or a throw
 * (ERR_HTTP2_INVALID_CONNECTION_HEADERS for keep-alive). They are dropped here:
 * "close the connection" means nothing for one stream of a shared connection.
 */
export function asHttp1Reply(res: http2.Http2ServerResponse): http.ServerResponse {
  const writeHead = res.writeHead.bind(res) as (status: number, headers?: unknown) => unknown;
  const setHeader = res.setHeader.bind(res);
  Object.defineProperty(res, 'writeHead', {
    configurable: true,
    value: (status: number, message?: unknown, headers?: unknown) => writeHead(status, h2Headers(typeof message === 'string' ? headers : message ?? headers)),
  });
  Object.defineProperty(res, 'setHeader', {
    configurable: true,
    value: (name: string, value: string | number | readonly string[]) => (CONNECTION_SPECIFIC.has(name.toLowerCase()) ? res : setHeader(name, value)),
  });
  Object.defineProperty(res, 'statusMessage', { configurable: true, get: () => '', set: () => {} });
  // A response cut before its end (send deadline, upstream failure mid-body) must not look complete: destroy()
  // alone resets the stream with NO_ERROR, which a client may take for a clean end of a truncated body.
  const destroy = res.destroy.bind(res);
  Object.defineProperty(res, 'destroy', {
    configurable: true,
    value: (err?: Error) => { if (!res.stream.closed && !res.stream.destroyed) res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR); destroy(err); return res; },
  });
  // One write request per chunk: by default the writes that queue behind one in flight go out as a single writev,
  // and writableLength drops only when all of it is sent (a MiB at once), so the send deadline would see a client
  // reading steadily as one taking nothing. Chunk by chunk, every chunk the client takes shows (as on HTTP/1.1).
  (res.stream as unknown as { _writev: unknown })._writev = null;
  // Answered before its request body ended (a 408 for a body too slow, a 413, a refusal after buffering): the stream
  // is closed with NO_ERROR once the answer is out (RFC 9113 §8.1), or the client's half stays open, the session is
  // never idle, and one HEADERS frame without its end holds the connection for ever.
  // (The stream's own 'finish': the compat response says 'finish' only once the stream has closed.)
  res.stream.once('finish', () => { if (!res.stream.endAfterHeaders && !res.stream.closed && !res.stream.destroyed && !res.stream.readableEnded) res.stream.close(http2.constants.NGHTTP2_NO_ERROR); });
  return res as unknown as http.ServerResponse;
}
