// TLS passthrough: a connection whose ClientHello names a passthrough domain
// is spliced, still encrypted, to one of the domain's upstreams. The bytes
// already read (the ClientHello) are replayed first, after the PROXY v2 header
// when the domain asks for it. Connect failover follows SPEC.md §3: a connect
// that times out is repeated (connectAttempts), then the next upstream is
// tried; a refused upstream fails over at once. Filtering is at connection
// level only (done at accept by the listener).
//
// A minimal splice of its own: src/upstream/tunnel.ts is the shared one.
import net from 'node:net';
import type { Config, DomainConfig } from '../config/schema.ts';
import type { Upstream, UpstreamGroup } from '../upstream/upstreams.ts';
import { proxyV2Header } from './proxy-protocol.ts';

export type PassthroughOutcome = 'spliced' | 'connect-refused' | 'connect-timeout' | 'client-gone';

export interface PassthroughEvent {
  domain: string;
  source: string;
  outcome: PassthroughOutcome;
  /** The upstream that took the connection (spliced only). */
  upstream: string | null;
  /** Connect attempts made, all upstreams together. */
  attempts: number;
}

export interface SpliceOptions {
  domain: DomainConfig;
  group: UpstreamGroup;
  upstream: Config['upstream'];
  /** Everything read from the client so far (at least the ClientHello). */
  head: Buffer;
  source: string;
  /** Called once the upstream accepted (the handshake deadline no longer applies) or all failed. */
  done(e: PassthroughEvent): void;
}

/** Open spliced connections (client side), so that a drain can cut them. */
export class Tunnels {
  readonly open = new Set<net.Socket>();
  get size(): number { return this.open.size; }
  destroyAll(): void { for (const s of this.open) s.destroy(); }
}

export function splice(client: net.Socket, opts: SpliceOptions, tunnels: Tunnels): void {
  const order = opts.group.order();
  const { connectTimeoutMs, connectAttempts } = opts.upstream;
  let idx = 0;
  let attempt = 1;
  let attempts = 0;
  let current: net.Socket | null = null;
  let finished = false;
  const finish = (outcome: PassthroughOutcome, up: Upstream | null) => {
    if (finished) return;
    finished = true;
    client.off('close', onClientGone);
    opts.done({ domain: opts.domain.name, source: opts.source, outcome, upstream: up?.address ?? null, attempts });
  };
  const onClientGone = () => { current?.destroy(); finish('client-gone', null); };
  client.once('close', onClientGone);

  const tryNext = () => {
    if (client.destroyed) return onClientGone();
    const up = order[idx];
    attempts++;
    const sock = net.connect({ host: up.host, port: up.port, noDelay: true });
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
      finish('spliced', up);
      join(client, sock, opts, tunnels);
    });
  };
  if (order.length === 0) { client.destroy(); finish('connect-refused', null); return; }
  tryNext();
}

function join(client: net.Socket, up: net.Socket, opts: SpliceOptions, tunnels: Tunnels): void {
  tunnels.open.add(client);
  const close = () => { client.destroy(); up.destroy(); tunnels.open.delete(client); };
  client.on('error', close);
  up.on('error', close);
  client.on('close', close);
  up.on('close', close);
  if (opts.domain.proxyProtocol === 'v2') {
    up.write(proxyV2Header(
      { address: client.remoteAddress ?? '', port: client.remotePort ?? 0 },
      { address: client.localAddress ?? '', port: client.localPort ?? 0 },
    ));
  }
  up.write(opts.head);
  // pipe() carries backpressure both ways and a half-close (FIN) across.
  client.pipe(up);
  up.pipe(client);
  client.resume();
}
