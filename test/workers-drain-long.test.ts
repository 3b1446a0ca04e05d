// Black-box: the real CLI with two workers and the longest drain time the
// config takes (shutdown.drainTimeoutMs 2147483647, Node's longest timer). On
// SIGTERM the primary arms a kill for workers that overstay the drain by a
// grace of 3 s; drainMs + 3000 went past Node's timer limit, and Node fires
// such a timer at once: every worker was killed the moment the drain began,
// cutting the requests in flight it was meant to let finish.
import { describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { perTest, request, until } from './helpers/servers.ts';

const { cli, origin } = perTest();

describe('shutdown.drainTimeoutMs at its maximum, with workers', () => {
  it('SIGTERM lets the request in flight finish and exits 0', async () => {
    const slow = await origin((_req, res) => setTimeout(() => res.end('finished'), 1500));
    const p = await cli('a.test', slow.address, { shutdown: { drainTimeoutMs: 2147483647 } });
    const pending = request(`http://127.0.0.1:${p.port}/`, { headers: { host: 'a.test' } }).then((r) => r, (e: Error) => e);
    expect(await until(() => slow.seen.length === 1, 5000)).toBe(true);
    p.child.kill('SIGTERM');
    const r = await pending;
    expect(r).not.toBeInstanceOf(Error);
    expect(r).toMatchObject({ status: 200, body: 'finished' });
    const [code] = p.child.exitCode !== null ? [p.child.exitCode] : await once(p.child, 'exit');
    expect(code).toBe(0);
  });
});
