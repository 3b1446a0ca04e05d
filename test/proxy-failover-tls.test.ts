// SPEC.md §3: an upstream that cannot be reached moves the request on to another healthy upstream, for every method
// (no byte of it was sent), and failed real requests count against the upstream's health. An HTTPS upstream can fail
// before the request goes out in ways a TCP connect does not show: a certificate that does not verify, a handshake
// the server resets. Those failed the request with a 502 (a GET too), and were not counted against the upstream, so
// one upstream with an expired or wrong certificate answered every request that came its way with a 502, for good.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import net from 'node:net';
import fs from 'node:fs';
import { once } from 'node:events';
import { startProxy, request, domain, type Proxy } from './helpers/servers.ts';
import { makePki } from './helpers/certs.ts';

let proxy: Proxy;
const servers: net.Server[] = [];

async function listen(s: net.Server): Promise<string> {
  servers.push(s);
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return `127.0.0.1:${(s.address() as net.AddressInfo).port}`;
}

beforeAll(async () => {
  const pki = makePki();
  const good = pki.leaf('pair.test');
  const other = pki.leaf('other.test');
  const serve = (leaf: { cert: string; key: string }, body: string) =>
    https.createServer({ cert: fs.readFileSync(leaf.cert), key: fs.readFileSync(leaf.key) }, (req, res) => { req.resume(); req.on('end', () => res.end(body)); });
  const goodAddress = await listen(serve(good, 'good'));
  const goodReset = await listen(serve(pki.leaf('reset.test'), 'good'));
  // Its certificate names another host: the handshake fails verification.
  const wrongName = await listen(serve(other, 'wrong'));
  // Resets every connection during the handshake.
  const resetter = await listen(net.createServer((s) => { s.on('error', () => {}); s.once('data', () => s.resetAndDestroy()); }));
  proxy = await startProxy({
    upstream: { caFile: pki.ca },
    domains: [
      domain('pair.test', [wrongName, goodAddress], { upstreamTls: true, healthCheck: { type: 'tcp', intervalMs: 60000, timeoutMs: 500, fall: 2, rise: 2 } }),
      domain('reset.test', [resetter, goodReset], { upstreamTls: true, healthCheck: { type: 'tcp', intervalMs: 60000, timeoutMs: 500, fall: 100, rise: 2 } }),
    ],
  });
});
afterAll(async () => { await proxy?.close(); for (const s of servers) { (s as https.Server).closeAllConnections?.(); s.close(); } });

describe('an HTTPS upstream that fails before the request goes out', () => {
  it('a certificate that does not verify: GET and POST move on to the next upstream, and the upstream goes down', async () => {
    for (let i = 0; i < 4; i++) {
      const get = await request(proxy.url, { headers: { host: 'pair.test' } });
      expect([get.status, get.body]).toEqual([200, 'good']);
      const post = await request(proxy.url, { method: 'POST', headers: { host: 'pair.test', 'content-type': 'text/plain' }, body: 'x' });
      expect([post.status, post.body]).toEqual([200, 'good']);
    }
    const wrong = proxy.app.upstreams.groups.get('pair.test')!.main[0];
    expect(wrong.healthy).toBe(false);
  });

  it('a handshake the server resets: a POST moves on too (nothing of it was sent)', async () => {
    for (let i = 0; i < 4; i++) {
      const post = await request(proxy.url, { method: 'POST', headers: { host: 'reset.test', 'content-type': 'text/plain' }, body: 'x' });
      expect([post.status, post.body]).toEqual([200, 'good']);
    }
  });
});
