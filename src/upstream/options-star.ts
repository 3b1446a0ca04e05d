import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * `OPTIONS *` asks about the server, not a resource (RFC 9110 §9.3.7), and undici cannot write a `*` target: the
 * proxy answers it, for the methods it forwards. Sending it on used to fail in undici and count as an upstream reset.
 */
export function answerOptionsStar(fr: { req: IncomingMessage; res: ServerResponse; body: unknown }): void {
  const { res } = fr;
  // A body nobody reads would be taken for the next request on this connection.
  if (fr.body && !Buffer.isBuffer(fr.body) && !fr.req.complete) res.shouldKeepAlive = false;
  res.writeHead(200, { allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS', 'content-length': 0, 'x-scrubber': 'options' });
  res.end();
}
