// TLS passthrough: a connection whose ClientHello names a passthrough domain
// is spliced, still encrypted, to one of the domain's upstreams. The bytes
// already read (the ClientHello) are replayed first, after the PROXY v2 header
// when the domain asks for it. Connect failover follows SPEC.md §3: a connect
// that times out is repeated (connectAttempts), then the next upstream is
// tried; a refused upstream fails over at once. Filtering is at connection
// level only (done at accept by the listener); what became of the connection
// is told back (onEvent) for attack mode and statistics.
//
// The splice is the shared one (src/upstream/tunnel.ts), as for WebSockets: an
// idle timeout, a bounded half-close, byte counts, and shutdown closes them all.
import net from 'node:net';
import type { Config, DomainConfig } from '../config/schema.ts';
import type { Upstream, UpstreamGroup } from '../upstream/upstreams.ts';
import type { Observation } from '../observe/observation.ts';
import type { Tunnels, TunnelEnd } from '../upstream/tunnel.ts';
import { proxyV2Header } from './proxy-protocol.ts';

/**
 * No byte either way for this long → both sides closed. As for WebSocket tunnels (src/pipeline/upgrade.ts): the
 * TLS inside may be an HTTP/2 connection a browser keeps open between page views, or a long poll; what it carries is
 * not ours to see, so only a connection that says nothing for minutes is taken for abandoned.
 */
export const PASSTHROUGH_IDLE_MS = 300_000;

export type PassthroughOutcome = 'spliced' | 'connect-refused' | 'connect-timeout' | 'client-gone';

export interface PassthroughEvent {
  domain: string;
  source: string;
  /** The client's address (the source is its /64 for IPv6). */
  client: string;
  outcome: PassthroughOutcome;
  /** The upstream that took the connection (spliced only). */
  upstream: string | null;
  /** Connect attempts made, all upstreams together. */
  attempts: number;
  /** From accept to the connect outcome (ms). */
  connectMs: number;
  /** Set on the second event of a spliced connection, when it ended. */
  end?: { bytesUp: number; bytesDown: number; durationMs: number; why: TunnelEnd };
}

export interface SpliceOptions {
  domain: DomainConfig;
  group: UpstreamGroup;
  upstream: Config['upstream'];
  /** Everything read from the client so far (at least the ClientHello). */
  head: Buffer;
  source: string;
  client: string;
  idleTimeoutMs: number;
  /** Called once at the connect outcome (spliced, or failed), and once more, with `end`, when a spliced one ends. */
  onEvent(e: PassthroughEvent): void;
}

export function splice(client: net.Socket, opts: SpliceOptions, tunnels: Tunnels): void {
  const order = opts.group.order();
  const { connectTimeoutMs, connectAttempts } = opts.upstream;
  let idx = 0;
  let attempt = 1;
  let attempts = 0;
  let current: net.Socket | null = null;
  let finished = false;
  const t0 = Date.now();
  const finish = (outcome: PassthroughOutcome, up: Upstream | null): PassthroughEvent | null => {
    if (finished) return null;
    finished = true;
    tunnels.connecting.delete(client);
    client.off('close', onClientGone);
    const e: PassthroughEvent = { domain: opts.domain.name, source: opts.source, client: opts.client, outcome, upstream: up?.address ?? null, attempts, connectMs: Date.now() - t0 };
    opts.onEvent(e);
    return e;
  };
  const onClientGone = () => { current?.destroy(); finish('client-gone', null); };
  client.once('close', onClientGone);
  tunnels.connecting.add(client);

  const tryNext = () => {
    if (client.destroyed) return onClientGone();
    const up = order[idx];
    attempts++;
    // allowHalfOpen: the upstream's FIN is passed on by the tunnel, which keeps the client's direction open (Node's
    // default ended ours at once, and the client's later bytes destroyed the tunnel).
    const sock = net.connect({ host: up.host, port: up.port, noDelay: true, allowHalfOpen: true });
    current = sock;
    const timer = setTimeout(() => failed('connect-timeout'), connectTimeoutMs);
    const failed = (kind: 'connect-refused' | 'connect-timeout') => {
      clearTimeout(timer);
      sock.removeAllListeners('connect');
      sock.on('error', () => {});
      sock.destroy();
      if (client.destroyed) return onClientGone();
      if (kind === 'connect-timeout' && attempt < connectAttempts) { attempt++; tryNext(); return; }
      up.report(false);
      if (idx + 1 < order.length) { idx++; attempt = 1; tryNext(); return; }
      client.destroy();
      finish(kind, null);
    };
    sock.once('error', () => failed('connect-refused'));
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      up.report(true);
      if (client.destroyed) { sock.destroy(); return onClientGone(); }
      const e = finish('spliced', up);
      if (e) join(client, sock, opts, tunnels, e);
    });
  };
  if (order.length === 0) { client.destroy(); finish('connect-refused', null); return; }
  tryNext();
}

function join(client: net.Socket, up: net.Socket, opts: SpliceOptions, tunnels: Tunnels, e: PassthroughEvent): void {
  // Nothing of the upstream's own choosing goes first: the PROXY header (the client's address), then the ClientHello.
  if (opts.domain.proxyProtocol === 'v2') {
    up.write(proxyV2Header(
      { address: client.remoteAddress ?? '', port: client.remotePort ?? 0 },
      { address: client.localAddress ?? '', port: client.localPort ?? 0 },
    ));
  }
  tunnels.add(client, up, {
    idleTimeoutMs: opts.idleTimeoutMs,
    clientHead: opts.head,
    onEnd: (t, why) => opts.onEvent({ ...e, end: { bytesUp: t.bytesUp, bytesDown: t.bytesDown, durationMs: Date.now() - t.startedAt, why } }),
  });
  // The listener paused the client to read its ClientHello; a 'data' listener does not undo an explicit pause.
  client.resume();
}

/**
 * What statistics record of a passthrough connection: one "request" of its domain with no status (none is visible),
 * passed with its bytes once it ended, or the proxy's failure to reach any upstream.
 */
export function passthroughObservation(e: PassthroughEvent): Observation {
  const failed = e.outcome === 'connect-refused' || e.outcome === 'connect-timeout';
  return {
    domain: e.domain, source: e.source, client: e.client, method: '', path: '', status: 0,
    bytesIn: e.end?.bytesUp ?? 0, bytesOut: e.end?.bytesDown ?? 0, durationMs: e.end?.durationMs ?? e.connectMs,
    contentType: null, outcome: failed ? 'proxy' : 'passed', proxyReason: failed ? e.outcome as 'connect-refused' | 'connect-timeout' : null,
    // As forward.ts counts them: a connect that timed out is a connect failure too ('timeout' is a slow answer).
    upstreamError: failed ? 'connect' : null,
    newConnection: true, queuedMs: 0, upstreamMs: e.end?.durationMs ?? 0, noLatency: true, // a tunnel lasts as its client wants
  };
}

/** The passthrough domains by every name they answer to (SNI). */
export function passthroughHosts(config: Config): Map<string, DomainConfig> {
  const m = new Map<string, DomainConfig>();
  for (const d of config.domains) if (d.passthrough) for (const h of [d.name, ...d.aliases]) m.set(h.replace(/\.$/, ''), d);
  return m;
}
