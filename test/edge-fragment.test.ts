// A request target with a fragment is refused (400, nothing forwarded): RFC
// 9112 has none in a request target and a browser never sends one, while
// "/search#x.js" read as an asset to the filter (no challenge, no newcomers'
// slice) and as the page /search to an application that routes by the URL's
// path (failed on the code before 2026-11-29: 200 from the application).
// HAProxy refuses it too (CVE-2023-45539). A real proxy in filter.mode always.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, domain, rawExchange, type Origin, type Proxy } from './helpers/servers.ts';

const PAGE = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0', 'accept-language': 'en' };

describe('a navigation disguised as an asset by a fragment', () => {
  let proxy: Proxy;
  let origin: Origin;
  const routed: string[] = [];
  beforeAll(async () => {
    // An application routes by the URL's path, as Node's URL, Express (parseurl) and nginx do: the fragment is no part of it.
    origin = await startOrigin((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      routed.push(path);
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<p>page ${path}</p>`);
    });
    proxy = await startProxy({ filter: { mode: 'always' }, domains: [domain('a.test', [origin.address])] });
  });
  afterAll(async () => { await proxy.close(); await origin.close(); });

  it('GET /search#x.js is refused (400 bad-request), not passed to the application as the page /search', async () => {
    const head = (target: string) => `GET ${target} HTTP/1.1\r\nHost: a.test\r\nAccept: ${PAGE.accept}\r\nUser-Agent: ${PAGE['user-agent']}\r\nAccept-Language: en\r\nConnection: close\r\n\r\n`;
    // The same page without the suffix is challenged, as it should be.
    const plain = await rawExchange(proxy.port, head('/search'), { localAddress: '127.0.94.1', timeoutMs: 2000 });
    expect(plain.text.split('\r\n')[0]).toBe('HTTP/1.1 302 Found');
    const x = await rawExchange(proxy.port, head('/search#x.js'), { localAddress: '127.0.94.2', timeoutMs: 2000 });
    expect({ status: x.text.split('\r\n')[0], by: /\r\nx-scrubber: bad-request\r\n/i.test(x.text), routed }).toEqual({ status: 'HTTP/1.1 400 Bad Request', by: true, routed: [] });
  });
});
