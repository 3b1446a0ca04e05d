// What an HTTP/2 connection may cost before it is cut, for the abuses node:http2
// (nghttp2) lets through. Proven by test/https-h2-abuse.test.ts, frame by frame:
// - nghttp2/Node already stop: CONTINUATION floods (at most 8 CONTINUATION
//   frames per header block: GOAWAY), too many concurrent streams (past our
//   SETTINGS_MAX_CONCURRENT_STREAMS of 100: PROTOCOL_ERROR, the connection is
//   closed), a SETTINGS frame of more than maxSettings (32) entries (GOAWAY
//   ENHANCE_YOUR_CALM), invalid frames (a connection error at once, e.g. a
//   WINDOW_UPDATE of 0), and rapid reset (CVE-2023-44487: nghttp2's reset rate
//   limit, GOAWAY) — though our budget below usually cuts it first.
// - not stopped: a PING or SETTINGS flood from a client that reads its ACKs
//   (measured: 600 000 PINGs in 3 s, connection still open). Each one crosses
//   into JavaScript (the 'ping' and 'remoteSettings' events), so they are
//   budgeted here per connection.
// - refused but never cut nor told: streams whose header block is over
//   maxHeaderListPairs or maxHeaderListSize get RST_STREAM ENHANCE_YOUR_CALM
//   and never reach JavaScript (measured: 3000 in 4 s on one connection), and
//   streams reset in the same breath as opened (rapid reset) mostly never do
//   either. Both show as stream ids that never became streams here: past a
//   budget per connection, it is cut.
// - an idle session: node:http2 has no keep-alive timeout; an HTTP/1.1
//   connection gets limits.idleTimeoutMs between requests, so does a session
//   with no open stream (checked by the sweep: closed within a second past it).
// Every connection cut here or by nghttp2 is counted against its source (as a
// malformed request: a browser never does any of it). A stream whose window
// never opens (slow read) is the send deadline's (src/upstream/slow-client.ts),
// as on HTTP/1.1; h2.ts makes its progress visible (one write per chunk).
import http2 from 'node:http2';

/** Per connection: at most this many PING, SETTINGS frames or refused streams from the client within windowMs. A
 *  browser sends one SETTINGS at start (and seldom another) and a PING now and then to measure the round trip; it
 *  never sends a header block Node refuses, keeps to SETTINGS_MAX_CONCURRENT_STREAMS and cancels a stream only once
 *  it has asked for it, so refused streams are few. */
export const H2_BUDGET = { pings: 50, settings: 20, windowMs: 10_000, refusedStreams: 20 };

/** The kind told to the filter: its "HPE_" prefix makes the detector count it as a malformed request. */
export type H2Abuse = 'HPE_H2_PING_FLOOD' | 'HPE_H2_SETTINGS_FLOOD' | 'HPE_H2_REFUSED_STREAMS' | 'HPE_H2_PROTOCOL';

/** Session errors that are the client's doing (nghttp2 refused what it sent), not a network failure. */
const PROTOCOL_ERRORS = new Set(['ERR_HTTP2_ERROR', 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES', 'ERR_HTTP2_TOO_MANY_CUSTOM_FRAMES', 'ERR_HTTP2_MAX_PENDING_SETTINGS_ACK']);

/** How often the open sessions are checked for refused streams (a client that sends only those makes no event) and
 *  for idleness. */
const SWEEP_MS = 1000;

export interface H2SessionsOptions {
  /** No open stream for this long → GOAWAY (0 = never); read per new session, so reloads apply. */
  idleTimeoutMs(): number;
  /** A connection was cut for abuse: tell the filter. */
  report(source: string, kind: H2Abuse): void;
}

/** The open HTTP/2 sessions, each guarded; a drain tells them to go away. */
export class H2Sessions {
  /** Connections cut, by kind. */
  readonly cut: Record<H2Abuse, number> = { HPE_H2_PING_FLOOD: 0, HPE_H2_SETTINGS_FLOOD: 0, HPE_H2_REFUSED_STREAMS: 0, HPE_H2_PROTOCOL: 0 };
  /** Each open session and its periodic check (refused streams, idleness). */
  private readonly open = new Map<http2.ServerHttp2Session, () => void>();
  private timer: NodeJS.Timeout | null = null;
  private readonly o: H2SessionsOptions;

  constructor(o: H2SessionsOptions) { this.o = o; }

  get size(): number { return this.open.size; }

  add(session: http2.ServerHttp2Session, source: string): void {
    const check = guard(session, this.o.idleTimeoutMs(), (kind) => { this.cut[kind]++; this.o.report(source, kind); });
    this.open.set(session, check);
    session.once('close', () => this.open.delete(session));
    this.timer ??= setInterval(this.sweep, SWEEP_MS).unref();
  }

  /** GOAWAY to all: streams in flight finish, no new ones; an idle session closes at once. */
  closeAll(): void { for (const s of this.open.keys()) s.close(); }
  destroyAll(): void { for (const s of this.open.keys()) s.destroy(); }

  private readonly sweep = () => {
    for (const check of this.open.values()) check();
    if (this.open.size === 0 && this.timer) { clearInterval(this.timer); this.timer = null; }
  };
}

/** Wires the budgets on one session; returns its periodic check. */
function guard(session: http2.ServerHttp2Session, idleTimeoutMs: number, onAbuse: (kind: H2Abuse) => void): () => void {
  let windowStart = Date.now();
  let pings = 0;
  let settings = 0;
  let open = 0;
  let streams = 0;
  /** Since when no stream has been open (0 while one is). */
  let quietSince = Date.now();
  /** Refused streams counted at the start of the current window. */
  let refusedMark = 0;
  let told = false;
  const cut = (kind: H2Abuse) => {
    if (!told) { told = true; onAbuse(kind); }
    if (session.destroyed) return;
    // The final GOAWAY says why; nothing more it queued is processed. (With no error, destroy(undefined, code)
    // would send NO_ERROR: the error is what makes the code count.)
    session.destroy(new Error(kind), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  };
  // Client stream ids are odd and rising: those up to the last one nghttp2 processed that never became a stream
  // here were refused (or reset by the client in the same breath: rapid reset) before JavaScript saw them.
  let lastId = 0;
  const refused = () => (lastId + 1) / 2 - streams;
  // Fixed windows: a client at the budget's edge gets at most twice it across a boundary, which is still cheap.
  const roll = () => {
    const now = Date.now();
    if (now - windowStart >= H2_BUDGET.windowMs) { windowStart = now; pings = settings = 0; refusedMark = refused(); }
  };
  const checkRefused = () => { roll(); if (refused() - refusedMark > H2_BUDGET.refusedStreams) cut('HPE_H2_REFUSED_STREAMS'); };
  /** A stream surfaced since the last sweep: its id already told of the refused ones before it. */
  let surfaced = false;
  const check = () => {
    if (session.destroyed) return;
    if (!surfaced) {
      // Only a session whose client made no stream we saw lately is asked (session.state is a native call).
      const last = session.state.lastProcStreamID ?? 0;
      if (last % 2 === 1 && last > lastId) { lastId = last; checkRefused(); }
    }
    surfaced = false;
    // Idle means no request, whatever else the client sends: PINGs within their budget, or a header block it never
    // finishes (slowloris on HTTP/2: no stream exists until the block ends), would keep a byte-based timer alive.
    if (idleTimeoutMs > 0 && open === 0 && !session.closed && Date.now() - quietSince >= idleTimeoutMs) session.close();
    // Told to go away (here or by a drain) a sweep ago with no stream open, and still there: close() waits for a
    // header block the client never finishes. Nothing is left to finish.
    else if (session.closed && open === 0) session.destroy();
  };
  session.on('ping', () => { roll(); if (++pings > H2_BUDGET.pings) cut('HPE_H2_PING_FLOOD'); });
  session.on('remoteSettings', () => { roll(); if (++settings > H2_BUDGET.settings) cut('HPE_H2_SETTINGS_FLOOD'); });
  session.on('error', (e: NodeJS.ErrnoException) => { if (PROTOCOL_ERRORS.has(e.code ?? '')) cut('HPE_H2_PROTOCOL'); });
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    streams++;
    open++;
    stream.once('close', () => { if (--open === 0) quietSince = Date.now(); });
    if ((stream.id ?? 0) > lastId) lastId = stream.id ?? 0;
    surfaced = true;
    checkRefused();
  });
  return check;
}
