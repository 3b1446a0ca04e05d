// The spread of challenge tokens counted for every node on one Redis
// (filter.challenge.maxNetworksPerToken): a token copied to a botnet is seen
// from a few networks on each node, and counted per node it passed
// maxNetworks × nodes before anyone refused it (until 2026-11-29).
//
// Each node counts locally first (TokenSpread: no round trip on the request
// path). When a token is seen on this node from a network for the first time,
// the network is added to the token's set in Redis (SADD, expiring with the
// trust time); a set past the line revokes the token here and, through a
// channel, on every node. A node that joins later, or forgot the token, finds
// the count when it first sees the token from a network of its own.
// Redis out of reach: nothing is counted there (the local count still holds);
// networks first seen meanwhile are not added later.
//
// Key layout (prefix as redis-keys.ts, default "scrubber:"):
//   <p>token:<client id>  set      the networks (IPv4 /24, IPv6 /48) it was used from, on any node
//   <p>tokens             channel  a client id found over-shared
// Its own two connections (commands, subscription): the decision bus's state
// machine (resync, queue, epoch) is not concerned by these counts.
import { Redis } from 'ioredis';
import type { TokenSpread } from '../challenge/cookie.ts';
import type { Config } from '../config/schema.ts';

export interface SharedTokensOptions {
  url: string;
  prefix?: string;
  logger?: { warn(o: object, msg: string): void };
}

export class SharedTokens {
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly prefix: string;
  private readonly channel: string;
  private readonly log: { warn(o: object, msg: string): void };
  private readonly revokedFns: ((id: string) => void)[] = [];
  private warnedAt = 0;

  constructor(o: SharedTokensOptions) {
    this.prefix = o.prefix ?? 'scrubber:';
    this.channel = `${this.prefix}tokens`;
    this.log = o.logger ?? { warn() {} };
    // Nothing is held for later: a count that cannot be sent now is dropped (the node's own count stands).
    const common = { enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 2000, commandTimeout: 5000, retryStrategy: (n: number) => Math.min(100 * n, 1000) };
    this.cmd = new Redis(o.url, { ...common, connectionName: 'scrubber-tokens' });
    this.sub = new Redis(o.url, { ...common, commandTimeout: undefined, autoResubscribe: false, connectionName: 'scrubber-tokens-sub' });
    for (const c of [this.cmd, this.sub]) c.on('error', () => {});
    this.sub.on('ready', () => { this.sub.subscribe(this.channel).catch(() => this.sub.disconnect(true)); });
    this.sub.on('message', (channel: string, id: string) => { if (channel === this.channel) this.revoked(id); });
  }

  /** Told each client id found over-shared, here (by the count in Redis) or on another node. */
  onRevoked(fn: (id: string) => void): void { this.revokedFns.push(fn); }

  /** This node saw the token of client `id` from `net` for the first time: counted for the cluster. Never waits. */
  network(id: string, net: string, maxNetworks: number, ttlMs: number): void {
    if (this.cmd.status !== 'ready') return;
    const key = `${this.prefix}token:${id}`;
    this.cmd.multi().sadd(key, net).pexpire(key, Math.max(1000, ttlMs)).scard(key).exec().then((r) => {
      const count = Number(r?.[2]?.[1] ?? 0);
      if (count <= maxNetworks) return;
      this.revoked(id);
      return this.cmd.publish(this.channel, id);
    }).catch((err: unknown) => {
      if (Date.now() - this.warnedAt < 10_000) return;
      this.warnedAt = Date.now();
      this.log.warn({ err: String(err) }, 'redis: a token\'s networks could not be counted (this node\'s own count still holds)');
    });
  }

  private revoked(id: string): void {
    for (const fn of this.revokedFns) {
      try { fn(id); } catch { /* one listener's failure is not the others' */ }
    }
  }

  /** Never waits for Redis (a quit() to a Redis that stopped answering would hold the shutdown): nothing is pending. */
  async close(): Promise<void> {
    for (const c of [this.cmd, this.sub]) c.disconnect();
  }
}

/** A process alone (no workers): its token spread counted over the nodes too. */
export function shareTokenSpread(spread: TokenSpread, url: string, config: () => Config, now: () => number, log: { child(o: object): { warn(o: object, msg: string): void } }): SharedTokens {
  const shared = new SharedTokens({ url, logger: log.child({ mod: 'redis' }) });
  spread.onNetwork = (id, net) => { const c = config().filter.challenge; shared.network(id, net, c.maxNetworksPerToken, c.trustSeconds * 1000); };
  shared.onRevoked((id) => spread.revoke(id, now()));
  return shared;
}
