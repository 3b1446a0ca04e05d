// Black-box: an IPv6 address as a domain's name or alias (the config takes any
// IP address there, as the default config's alias "127.0.0.1") is routed. A
// client writes it in brackets (Host: [::1]:8080, RFC 3986), and the route
// table held it without them, so every such request got 421 unknown-host;
// the spelling of the address does not matter either ([0:0::1] is ::1), and
// two spellings of one address in two domains are a clash.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigObject } from '../src/config/load.ts';
import { domain, request, startOrigin, startProxy, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin;
let proxy: Proxy;
beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startProxy({ domains: [domain('a.test', [origin.address], { aliases: ['::1', '127.0.0.1']}), domain('2001:DB8::1', [origin.address])] });
});
afterAll(async () => { await proxy?.close(); await origin?.close(); });

describe('an IPv6 address as a domain name or alias', () => {
  it('routes Host: [addr] and [addr]:port, however the address is spelt', async () => {
    for (const host of ['[::1]', `[::1]:${proxy.port}`, '[0:0:0:0:0:0:0:1]', '[2001:db8::1]', '[2001:DB8:0::1]:80', '127.0.0.1', 'a.test']) {
      const r = await request(proxy.url + '/', { headers: { host } });
      expect({ host, status: r.status, scrubber: r.headers['x-scrubber'] }).toEqual({ host, status: 200, scrubber: undefined });
    }
  });

  it('an address nobody configured is still 421, and a malformed one 400', async () => {
    expect((await request(proxy.url + '/', { headers: { host: '[::2]' } })).status).toBe(421);
    expect((await request(proxy.url + '/', { headers: { host: '[::1' } })).status).toBe(400);
  });

  it('two spellings of one address in two domains are refused as a clash', () => {
    const r = loadConfigObject({ domains: [{ name: 'a.test', aliases: ['::1'], upstreams: ['127.0.0.1:1'] }, { name: 'b.test', aliases: ['0:0::1'], upstreams: ['127.0.0.1:1'] }] }, {});
    expect(r.ok ? [] : r.problems).toEqual(['domains[1]: host [::1] is already used by domains[0]']);
  });
});
