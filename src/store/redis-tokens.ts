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
// Redis out of reach: the local count still holds, and the networks first
// seen meanwhile (bounded, the oldest dropped first) are added when it is back,
// so what a node saw alone counts for the cluster once it rejoins.
//
// Key layout (prefix as redis-keys.ts, default "scrubber:"):
//   <p>token:<client id>  set      the networks (IPv4 /24, IPv6 /48) it was used from, on any node
//   <p>tokens             channel  a client id found over-shared
// Its own two connections (commands, subscription): the decision bus's state
// machine (resync, queue, epoch) is not concerned by these counts.
import type { Redis } from 'ioredis';
import { redisClient } from './redis-client.ts';
import { channelName } from './redis-keys.ts';
import type { TokenSpread } from '../challenge/cookie.ts';
import type { Config } from '../config/schema.ts';

export interface SharedTokensOptions {
  url: string;
  prefix?: string;
  logger?: { warn(o: object, msg: string): void };
  now?: () => number;
}

/** Networks held for a Redis out of reach: a bound on what an outage costs in memory (one entry per token and network). */
export const MAX_UNSENT = 10_000;

interface Unsent { id: string; net: string; maxNetworks: number; until: number }

export class SharedTokens {
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly prefix: string;
  private readonly channel: string;
  private readonly log: { warn(o: object, msg: string): void };
  private readonly revokedFns: ((id: string) => void)[] = [];
  private warnedAt = 0;
  private readonly now: () => number;
  /** Networks first seen while Redis could not be told (keyed by token and network; the Map's order is age). */
  private readonly unsent = new Map<string, Unsent>();

  constructor(o: SharedTokensOptions) {
    this.prefix = o.prefix ?? 'scrubber:';
    this.channel = channelName(this.prefix, 'tokens', o.url);
    this.log = o.logger ?? { warn() {} };
    this.now = o.now ?? Date.now;
    // ioredis holds nothing for later (a command to a Redis out of reach fails at once); what this node saw meanwhile
    // is held here instead, and sent on each (re)connection.
    const common = { enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 2000, commandTimeout: 5000, retryStrategy: (n: number) => Math.min(100 * n, 1000) };
    this.cmd = redisClient(o.url, { ...common, connectionName: 'scrubber-tokens' }, null);
    this.sub = redisClient(o.url, { ...common, commandTimeout: undefined, autoResubscribe: false, connectionName: 'scrubber-tokens-sub' }, null);
    for (const c of [this.cmd, this.sub]) c.on('error', () => {});
    this.cmd.on('ready', () => this.flush());
    this.sub.on('ready', () => { this.sub.subscribe(this.channel).catch(() => this.sub.disconnect(true)); });
    this.sub.on('message', (channel: string, id: string) => { if (channel === this.channel) this.revoked(id); });
  }

  /** Told each client id found over-shared, here (by the count in Redis) or on another node. */
  onRevoked(fn: (id: string) => void): void { this.revokedFns.push(fn); }

  /** This node saw the token of client `id` from `net` for the first time: counted for the cluster. Never waits. */
  network(id: string, net: string, maxNetworks: number, ttlMs: number): void {
    this.send({ id, net, maxNetworks, until: this.now() + Math.max(1000, ttlMs) });
  }

  /** How many networks wait for Redis to be back. */
  get waiting(): number { return this.unsent.size; }

  private send(u: Unsent): void {
    if (this.cmd.status !== 'ready') { this.hold(u); return; }
    const key = `${this.prefix}token:${u.id}`;
    this.cmd.multi().sadd(key, u.net).pexpire(key, Math.max(1, u.until - this.now())).scard(key).exec().then((r) => {
      const count = Number(r?.[2]?.[1] ?? 0);
      if (count <= u.maxNetworks) return;
      this.revoked(u.id);
      return this.cmd.publish(this.channel, u.id);
    }).catch((err: unknown) => {
      this.hold(u);
      if (this.now() - this.warnedAt < 10_000) return;
      this.warnedAt = this.now();
      this.log.warn({ err: String(err) }, 'redis: a token\'s networks could not be counted yet (this node\'s own count holds; sent when Redis is back)');
    });
  }

  private hold(u: Unsent): void {
    const k = `${u.id} ${u.net}`;
    this.unsent.delete(k);
    if (this.unsent.size >= MAX_UNSENT) this.unsent.delete(this.unsent.keys().next().value!);
    this.unsent.set(k, u);
  }

  /** Redis is back: what was seen meanwhile is counted, but for tokens whose trust ran out since. */
  private flush(): void {
    const now = this.now(), all = [...this.unsent.values()];
    this.unsent.clear();
    for (const u of all) if (u.until > now) this.send(u);
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
export function shareTokenSpread(spread: TokenSpread, redis: Config['state']['redis'], config: () => Config, now: () => number, log: { child(o: object): { warn(o: object, msg: string): void } }): SharedTokens {
  const shared = new SharedTokens({ url: redis.url, prefix: redis.prefix, logger: log.child({ mod: 'redis' }) });
  spread.onNetwork = (id, net) => { const c = config().filter.challenge; shared.network(id, net, c.maxNetworksPerToken, c.trustSeconds * 1000); };
  shared.onRevoked((id) => spread.revoke(id, now()));
  return shared;
}
