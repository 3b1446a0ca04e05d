// HTTP/2 streams into the pipeline, until the protocol-neutral request head
// exists (src/http/): the pipeline reads req.rawHeaders and req.headers.host
// as HTTP/1.1 gives them. An HTTP/2 request carries its host in :authority and
// its method, path and scheme in pseudo-headers, which must never be
// forwarded as header lines; this gives the compat request the HTTP/1.1 shape
// the pipeline reads. Temporary: the lead's request head replaces it.
import type http from 'node:http';
import type http2 from 'node:http2';
import type net from 'node:net';
import { connectionInfo, tagConnectionInfo } from './connections.ts';

export function asHttp1Head(req: http2.Http2ServerRequest): http.IncomingMessage {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let host = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    if (name.length === 4 && name.toLowerCase() === 'host') host = true;
    out.push(name, raw[i + 1]);
  }
  // HTTP/2 frames the body itself: a body without content-length is what HTTP/1.1 calls chunked, and the
  // pipeline reads a body only when one of the two is declared (transfer-encoding is hop-by-hop: never forwarded).
  if (!req.stream.endAfterHeaders && req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) {
    out.push('transfer-encoding', 'chunked');
    req.headers['transfer-encoding'] = 'chunked';
  }
  const authority = req.headers[':authority'];
  if (!host && typeof authority === 'string') {
    out.unshift('host', authority);
    req.headers.host = authority;
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
