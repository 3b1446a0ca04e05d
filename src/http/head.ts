// One request head, whatever protocol brought it. The stages after http/
// (route, detect, limits, upstream) read this, never Node's IncomingMessage, so
// that HTTP/2 and HTTP/1.1 requests take the same flow.
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { connectionInfo } from '../listen/connections.ts';
import type { ChallengeMark } from '../challenge/cookieless.ts';

export interface RequestHead {
  method: string;
  /** "1.1", "1.0" or "2.0" as parsed; Node's parser also yields "0.9" for a request line without a version. */
  version: string;
  /** The request target as sent (origin-form, or "*"). */
  url: string;
  /** Name/value pairs as they came, for forwarding (order and case kept). */
  rawHeaders: string[];
  /** Lower-cased names, as Node parses them. */
  headers: IncomingHttpHeaders;
  /** The Host (HTTP/1.1) or :authority (HTTP/2) as sent. */
  authority: string | undefined;
  /** The source the request is attributed to (IPv4, or IPv6 /64). */
  source: string;
  /** The client address written to X-Forwarded-For. */
  client: string;
  tls: boolean;
  /** The first request on its connection. */
  newConnection: boolean;
  /** Request line and header bytes, near enough for statistics. */
  headBytes: number;
  /** What detection keeps per connection (absent: a head made without one, in tests). */
  conn?: { clientId: string | null; challenged: ChallengeMark | null };
}

/** The head of an HTTP/1.1 request (and, through Node's compatibility layer, an HTTP/2 one). */
export function headOf(req: IncomingMessage): RequestHead {
  const conn = connectionInfo(req.socket as Socket);
  conn.requests++;
  conn.active++;
  const method = req.method ?? 'GET';
  const url = req.url ?? '/';
  const raw = req.rawHeaders;
  let headBytes = method.length + url.length + 14;
  for (let i = 0; i < raw.length; i++) headBytes += raw[i].length + 2;
  return {
    method, version: req.httpVersion, url, rawHeaders: raw, headers: req.headers, authority: req.headers.host ?? (req.headers[':authority'] as string | undefined),
    source: conn.source, client: conn.client, tls: conn.tls, newConnection: conn.requests === 1, headBytes, conn,
  };
}
