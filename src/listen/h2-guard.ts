// What an HTTP/2 connection may cost before it is cut, for the abuses node:http2
// (nghttp2) lets through. Proven by test/https-h2-abuse.test.ts, frame by frame:
// - nghttp2/Node already stop: rapid reset (nghttp2's stream-reset rate limit,
//   GOAWAY ENHANCE_YOUR_CALM), CONTINUATION floods (at most 8 CONTINUATION
//   frames per header block, and maxHeaderListSize), too many concurrent
//   streams (our SETTINGS_MAX_CONCURRENT_STREAMS; past it the connection gets
//   GOAWAY), oversized SETTINGS (maxSettings entries), invalid frames
//   (maxSessionInvalidFrames), and PING/SETTINGS floods from a client that does
//   not read its ACKs (nghttp2's outbound queue limit).
// - not stopped: a PING or SETTINGS flood from a client that reads its ACKs
//   (measured: 600 000 PINGs in 3 s, connection still open). Each one crosses
//   into JavaScript (the 'ping' and 'remoteSettings' events), so they are
//   budgeted here per connection.
// - an idle session: node:http2 has no keep-alive timeout; an HTTP/1.1
//   connection gets limits.idleTimeoutMs between requests, so does a session
//   with no open stream.
// Every connection cut here or by nghttp2 is counted against its source (as a
// malformed request: a browser never does any of it). A stream whose window
// never opens (slow read) is the send deadline's (src/upstream/slow-client.ts),
// as on HTTP/1.1: the compat response's writableLength does not shrink.
import http2 from 'node:http2';

/** Per connection: at most this many PING (or SETTINGS) frames from the client within WINDOW_MS. A browser
 *  sends one SETTINGS at start (and seldom another) and a PING now and then to measure the round trip. */
export const H2_BUDGET = { pings: 50, settings: 20, windowMs: 10_000 };

/** The kind told to the filter: its "HPE_" prefix makes the detector count it as a malformed request. */
export type H2Abuse = 'HPE_H2_PING_FLOOD' | 'HPE_H2_SETTINGS_FLOOD' | 'HPE_H2_PROTOCOL';

/** Session errors that are the client's doing (nghttp2 refused what it sent), not a network failure. */
const PROTOCOL_ERRORS = new Set(['ERR_HTTP2_ERROR', 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES', 'ERR_HTTP2_TOO_MANY_CUSTOM_FRAMES', 'ERR_HTTP2_MAX_PENDING_SETTINGS_ACK']);

export interface GuardOptions {
  /** No open stream and no frame for this long → GOAWAY (0 = never). */
  idleTimeoutMs: number;
  /** Called once per cut connection. */
  onAbuse(kind: H2Abuse): void;
}

export function guardSession(session: http2.ServerHttp2Session, o: GuardOptions): void {
  let windowStart = Date.now();
  let pings = 0;
  let settings = 0;
  let open = 0;
  let told = false;
  const cut = (kind: H2Abuse) => {
    if (!told) { told = true; o.onAbuse(kind); }
    if (session.destroyed) return;
    // The final GOAWAY says why; nothing more it queued is processed. (With no error, destroy(undefined, code)
    // would send NO_ERROR: the error is what makes the code count.)
    session.destroy(new Error(kind), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  };
  // Fixed windows: a client at the budget's edge gets at most twice it across a boundary, which is still cheap.
  const roll = () => {
    const now = Date.now();
    if (now - windowStart >= H2_BUDGET.windowMs) { windowStart = now; pings = settings = 0; }
  };
  session.on('ping', () => { roll(); if (++pings > H2_BUDGET.pings) cut('HPE_H2_PING_FLOOD'); });
  session.on('remoteSettings', () => { roll(); if (++settings > H2_BUDGET.settings) cut('HPE_H2_SETTINGS_FLOOD'); });
  session.on('error', (e: NodeJS.ErrnoException) => { if (PROTOCOL_ERRORS.has(e.code ?? '')) cut('HPE_H2_PROTOCOL'); });
  session.on('stream', (stream: http2.ServerHttp2Stream) => { open++; stream.once('close', () => { open--; }); });
  if (o.idleTimeoutMs > 0) {
    // Node's session timer counts any byte either way; fired with a stream open (an upstream still working),
    // it re-arms on the next byte.
    session.setTimeout(o.idleTimeoutMs, () => { if (open === 0 && !session.closed) session.close(); });
  }
}
