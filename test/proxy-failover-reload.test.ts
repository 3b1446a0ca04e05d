// Upstream selection, failover and reload (SPEC.md §3, §1 reload). Each case failed on the code before 2026-11-29.
// What is checked, and why:
//  1. A request whose main upstreams all fail to connect (they died a moment ago; the health state has not caught up)
//     moves on to the domain's healthy backup instead of answering 502: §3 "moves on to another healthy upstream of
//     the domain if there is one". tryOrder offers only the healthy mains while one is still marked healthy, so the
//     backup is never tried and every request in that window (fall × a connect timeout, 18 s for a blackholed main
//     under the defaults) gets a 502 although the operator configured a backup for exactly this.
//  2. A reload that only changes a global upstream setting (connectTimeoutMs) must not drop a request in flight:
//     §1 "takes effect for new requests ... without dropping connections". The reload replaces every Upstream (its key
//     holds the setting) and closes the old pools; a request in its connect retry then dispatches on a closed pool
//     (ClientClosedError), and its failover too, so it gets a 502 while the same upstreams are still configured.
//  3. A reload that only changes a global upstream setting must not bring a dead upstream back as healthy: the new
//     Upstream starts healthy and is probed only after intervalMs, so traffic goes to it again.
// Everything binds to loopback; clients connect to 127.0.0.1; every wait is bounded.
import { afterEach, describe, expect, it } from 'vitest';
import { startProxy, startOrigin, startBlackhole, freePort, request, sleep, until, type Proxy, type Origin } from './helpers/servers.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

const upstreamOf = (p: Proxy, domain: string, address: string) => p.app.upstreams.groups.get(domain)!.all().find((u) => u.address === address)!;

describe('upstreams: failover to backups, and reloads with requests in flight', () => {
  it('a request whose main upstream refuses goes to the healthy backup, not 502', async () => {
    const backup: Origin = await startOrigin(); cleanups.push(() => backup.close());
    const dead = `127.0.0.1:${await freePort()}`;
    const proxy = await startProxy({
      upstream: { connectTimeoutMs: 300 },
      domains: [{ name: 'bk.test', upstreams: [dead], backup: [backup.address], healthCheck: { type: 'tcp', intervalMs: 600000, timeoutMs: 200, fall: 3, rise: 2 } }],
    });
    cleanups.push(() => proxy.close());
    const r = await request(proxy.url + '/', { headers: { host: 'bk.test' } });
    expect(`${r.status} ${r.headers['x-scrubber'] ?? ''}`).toBe('200 ');
    expect(backup.seen).toHaveLength(1);
  }, 10_000);

  it('a reload that changes connectTimeoutMs does not turn a request in its connect retry into a 502', async () => {
    const good: Origin = await startOrigin(); cleanups.push(() => good.close());
    const hole = await startBlackhole(); cleanups.push(() => hole.close());
    const proxy = await startProxy({
      upstream: { connectTimeoutMs: 800, connectAttempts: 2 },
      // Round robin starts at the first: the request tries the blackhole first, then fails over to `good`.
      domains: [{ name: 'rl.test', upstreams: [hole.address, good.address], healthCheck: { type: 'tcp', intervalMs: 600000, timeoutMs: 200, fall: 3, rise: 2 } }],
    });
    cleanups.push(() => proxy.close());
    const pending = request(proxy.url + '/', { headers: { host: 'rl.test' } });
    await sleep(300); // the first connect attempt to the blackhole is under way
    const config = proxy.app.config;
    expect(proxy.app.reload({ ok: true, config: { ...config, upstream: { ...config.upstream, connectTimeoutMs: 900 } } }).ok).toBe(true);
    const r = await pending;
    expect(`${r.status} ${r.headers['x-scrubber'] ?? ''}`).toBe('200 ');
    expect(good.seen).toHaveLength(1);
  }, 15_000);

  it('a reload that changes responseTimeoutMs keeps a down upstream down', async () => {
    const good: Origin = await startOrigin(); cleanups.push(() => good.close());
    const dead = `127.0.0.1:${await freePort()}`;
    const proxy = await startProxy({
      domains: [{ name: 'hr.test', upstreams: [dead, good.address], healthCheck: { type: 'tcp', intervalMs: 100, timeoutMs: 200, fall: 2, rise: 2 } }],
    });
    cleanups.push(() => proxy.close());
    expect(await until(() => !upstreamOf(proxy, 'hr.test', dead).healthy, 3000)).toBe(true);
    const config = proxy.app.config;
    // A longer response timeout (nothing about health): the upstream is no less dead.
    expect(proxy.app.reload({ ok: true, config: { ...config, upstream: { ...config.upstream, responseTimeoutMs: 30000 } } }).ok).toBe(true);
    expect(upstreamOf(proxy, 'hr.test', dead).healthy).toBe(false);
  }, 10_000);
});
