// One way to make a Redis client, for every link to the shared Redis (the
// decision bus, the token counts, the cluster statistics). ioredis selects the
// URL's database on connect and, when the server has no such database (`/99`
// on a Redis of 16), only emits the refusal and goes on in database 0: another
// tenant's, or the default one. Such a client is closed for good as soon as the
// refusal comes (it comes before the client is ready: nothing was written), and
// the node runs on its own state (degraded), saying once which key is wrong.
import { Redis, type RedisOptions } from 'ioredis';

export interface RefusalLog { warn(o: object, msg?: string): void }

export function redisClient(url: string, opts: RedisOptions, log: RefusalLog | null): Redis {
  const c = new Redis(url, opts);
  c.on('error', (e: Error & { command?: { name?: string; args?: unknown[] } }) => {
    if (e.command?.name !== 'select' || c.status === 'end') return;
    c.disconnect();
    log?.warn({ database: e.command.args?.[0], err: e.message }, `state.redis.url: Redis refused the database it names (${e.message}); running on local state`);
  });
  return c;
}
