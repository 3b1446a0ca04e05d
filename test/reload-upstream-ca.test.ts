// An HTTPS upstream's CA bundle (upstream.caFile) replaced at the same path and
// reloaded: new upstream handshakes verify against the bundle as re-read. The
// reload read the file but kept every upstream whose settings were unchanged,
// with the connector built from the bundle read at start, so a rotated
// upstream certificate got 502s until a restart (failed on the code before
// 2026-11-29). A real proxy in-process, two real CAs, a real TLS origin.
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import https from 'node:https';
import type net from 'node:net';
import { once } from 'node:events';
import { startProxy, request, domain, tempDir, type Proxy } from './helpers/servers.ts';
import { makePki } from './helpers/certs.ts';

describe('HTTPS upstreams: upstream.caFile replaced on disk, then a reload', () => {
  it('new upstream handshakes verify against the CA bundle as re-read by the reload, not the one read at start', async () => {
    const ca1 = makePki();
    const ca2 = makePki();
    const l1 = ca1.leaf('secure.test');
    const l2 = ca2.leaf('secure.test');
    const origin = https.createServer({ cert: fs.readFileSync(l1.cert), key: fs.readFileSync(l1.key) }, (_q, r) => r.end('over tls'));
    origin.listen(0, '127.0.0.1');
    await once(origin, 'listening');
    const address = `127.0.0.1:${(origin.address() as net.AddressInfo).port}`;
    const caFile = path.join(tempDir('scrubber-upstream-ca-'), 'upstream-ca.pem');
    fs.copyFileSync(ca1.ca, caFile);
    const overrides = { upstream: { caFile }, domains: [domain('secure.test', [address], { upstreamTls: true })] };
    const proxy: Proxy = await startProxy(overrides);
    let fresh: Proxy | null = null;
    try {
      const get = (p: Proxy) => request(p.url, { headers: { host: 'secure.test' } });
      expect((await get(proxy)).status).toBe(200);
      origin.setSecureContext({ cert: fs.readFileSync(l2.cert), key: fs.readFileSync(l2.key) });
      origin.closeAllConnections();
      fs.copyFileSync(ca2.ca, caFile);
      // Control: a proxy started on the same config now (the same file, as it is on disk) reaches the upstream.
      fresh = await startProxy(overrides);
      const c = await get(fresh);
      expect([c.status, c.body]).toEqual([200, 'over tls']);
      // The running proxy, reloaded: the reload succeeds, yet its upstream keeps verifying against the old CA.
      expect(proxy.app.reload({ ok: true, config: proxy.app.config })).toEqual({ ok: true });
      const r = await get(proxy);
      expect([r.status, r.headers['x-scrubber'], r.body]).toEqual([200, undefined, 'over tls']);
    } finally {
      await proxy.close();
      await fresh?.close();
      origin.closeAllConnections();
      origin.close();
    }
  }, 20_000);
});
