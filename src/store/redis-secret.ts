// The challenge secret every node on one Redis signs its cookies with (<p>secret, redis-keys.ts), kept apart from
// RedisBus (which calls it at each connection). A node that could not read it at its start (Redis down) signs with
// its own meanwhile; once Redis answers it takes the shared one (or offers its own where there is none: SET NX, the
// first node wins) and hands it to the live challenge (watch), so that a browser that passed on another node passes
// here too. Read again at every connection and after Redis lost its data: a node that started against an emptied
// Redis may have set its own first, and every node then takes that one, not a secret of its own.
import type { Redis } from 'ioredis';
import { sharedValue, type BusLogger } from './redis-keys.ts';

export class SharedSecret {
  /** The secret in use on this node (null until secret() was asked: nothing to offer nor to replace yet). */
  private current: Buffer | null = null;
  /** Whether `current` is the one Redis holds, as of the last connection (false: read it at the next resync). */
  private known = false;
  private readonly watchers: ((s: Buffer) => void)[] = [];
  private readonly cmd: Redis;
  private readonly key: string;
  private readonly log: BusLogger;
  private warnedAt = 0;

  constructor(cmd: Redis, key: string, log: BusLogger) { this.cmd = cmd; this.key = key; this.log = log; }

  watch(fn: (s: Buffer) => void): void { this.watchers.push(fn); }

  /** At the node's start: the shared secret, or `local` when Redis is not reachable (then taken up later: check()). */
  async first(local: Buffer, reachable: boolean): Promise<Buffer> {
    this.current ??= local;
    if (!reachable) {
      this.log.warn({}, 'redis: unreachable, challenge secret is this node\'s own until Redis is reached');
      return this.current;
    }
    try {
      await this.check();
    } catch (err) {
      this.log.warn({ err: String(err) }, 'redis: secret not read, challenge secret is this node\'s own until it is');
    }
    return this.current;
  }

  /** The connection was lost, or Redis lost its data: read the secret again at the next check. */
  forget(): void { this.known = false; }

  /** Once per connection (and after a wipe): reads the shared secret (ours written where there is none) and, when
   *  it is not the one in use, takes it and tells the watchers. Throws what Redis answered (tried again later). */
  async check(): Promise<void> {
    if (this.known || this.current === null) return;
    const shared = await sharedValue(this.cmd, this.key, this.current);
    this.known = true;
    if (shared.equals(this.current)) return;
    this.current = shared;
    this.log.info({}, 'redis: challenge secret is now the one shared by the nodes (cookies signed with this node\'s own still pass for the trust time)');
    for (const fn of this.watchers) {
      try { fn(shared); } catch (err) { this.log.warn({ err: String(err) }, 'redis: a secret watcher threw'); }
    }
  }

  /** check(), its failure logged (one line every 10 s at most) and left to the next call. */
  async tryCheck(): Promise<void> {
    try { await this.check(); } catch (err) {
      if (Date.now() - this.warnedAt > 10_000) { this.warnedAt = Date.now(); this.log.warn({ err: String(err) }, 'redis: challenge secret not read, tried again'); }
    }
  }
}
