// A request that is still on its way to the upstream (its body being read at the edge) when a reload removes its
// domain: it started on the old runtime, but the upstream groups are the new one's. Looking its domain's group up
// then found none, and `forward` threw inside a stream callback (an uncaught exception: the proxy's process died).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, startOrigin, domain, openRaw, statusOf, until, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin;
let proxy: Proxy;
beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startProxy({ domains: [domain('keep.test', [origin.address]), domain('gone.test', [origin.address])] });
});
afterAll(async () => { await proxy?.close(); await origin?.close(); });

describe('a reload that removes a domain with a request in flight', () => {
  it('answers that request as the new config would (421), and the proxy lives on', async () => {
    const c = openRaw(proxy.port, 'POST / HTTP/1.1\r\nHost: gone.test\r\nContent-Length: 10\r\n\r\nhello');
    expect(await until(() => proxy.app.pipeline.inFlight === 1, 2000)).toBe(true);
    const config = proxy.app.config;
    expect(proxy.app.reload({ ok: true, config: { ...config, domains: config.domains.filter((d) => d.name !== 'gone.test') } }).ok).toBe(true);
    c.s.write('world');
    await until(() => statusOf(c.text()) !== 0, 2000);
    expect(statusOf(c.text())).toBe(421);
    expect(origin.seen).toHaveLength(0);
    expect(await until(() => proxy.app.pipeline.inFlight === 0 && proxy.app.pipeline.budget.inFlight === 0, 1000)).toBe(true);
    c.s.destroy();
  });
});
