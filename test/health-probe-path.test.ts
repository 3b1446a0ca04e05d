// A health check path that Node will not put on the wire (a space, a character past Latin-1) is accepted by the config
// check (it only asks for a leading /). The probe made its request inside its promise, so Node's synchronous refusal
// rejected it, and the checker's interval callback let the rejection go unhandled: the process died at the first
// check. Such a probe is a failed check (the upstream's health says so), not a crash.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probe } from '../src/upstream/health.ts';
import { startOrigin, startProxy, domain, sleep, request, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin;
beforeAll(async () => { origin = await startOrigin(); });
afterAll(async () => { await origin?.close(); });

describe('a health check path Node refuses to send', () => {
  it('is a failed probe, not a rejected promise', async () => {
    const r = await probe('127.0.0.1', origin.port, { type: 'http', path: '/health check', timeoutMs: 500 }, 'a.test');
    expect(r.error).toBeTruthy();
    expect(r.status).toBeNull();
  });

  it('does not take the proxy down: its checks fail, requests are still served', async () => {
    let proxy: Proxy | null = null;
    try {
      proxy = await startProxy({ domains: [domain('a.test', [origin.address], { healthCheck: { type: 'http', path: '/santé ✓', intervalMs: 50, timeoutMs: 200, fall: 1, rise: 1 } })] });
      await sleep(300);
      const up = proxy.app.upstreams.groups.get('a.test')!.main[0];
      expect(up.healthy).toBe(false);
      // Every upstream down: the proxy still tries them (fail open).
      expect((await request(proxy.url, { headers: { host: 'a.test' } })).status).toBe(200);
    } finally { await proxy?.close(); }
  });
});
