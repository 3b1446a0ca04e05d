// A domain or alias may be an IPv6 address (config: any address is a valid
// name): a client that reaches the site by that address sends it in Host as an
// IP-literal, in brackets (RFC 3986 §3.2.2), with or without a port, in any case
// and not necessarily in the canonical (compressed) form.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, domain, rawExchange, statusOf, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin;
let proxy: Proxy;

beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startProxy({
    domains: [
      domain('site.test', [origin.address], { aliases: ['2001:db8::10', '203.0.113.10'] }),
      domain('2001:DB8:0:0:1::1', [origin.address]),
    ],
  });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

const get = async (host: string) => {
  const r = await rawExchange(proxy.port, `GET / HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`, { timeoutMs: 1500 });
  return { status: statusOf(r.text), scrubber: /\r\nx-scrubber: ([^\r\n]*)/i.exec(r.text)?.[1] ?? null };
};

describe('routing an IPv6 literal Host', () => {
  it('reaches the domain whose name or alias is that address', async () => {
    for (const host of ['[2001:db8::10]', '[2001:db8::10]:8080', '[2001:DB8::10]', '[2001:db8:0:0::10]', '[2001:db8:0:0:1::1]', '[2001:db8::1:0:0:1]:443']) {
      expect(await get(host), host).toEqual({ status: 200, scrubber: null });
    }
    expect(await get('203.0.113.10:80')).toEqual({ status: 200, scrubber: null });
  });

  it('another address, or a bracketed name that is no address, is not routed', async () => {
    expect((await get('[2001:db8::11]')).status).toBe(421);
    expect((await get('[site.test]')).status).toBe(400);
    expect((await get('[::ffff:zz]')).status).toBe(400);
    expect((await get('2001:db8::10')).status).toBe(400);
  });
});
