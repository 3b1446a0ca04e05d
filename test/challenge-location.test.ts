// The challenge's Location is the request's own target, so that the client
// comes back to the same URL with its cookie. A target whose path starts with
// "//" (or "/\", which browsers read as "//") is, as a Location, a
// network-path reference: the browser would leave for the host it names.
// A link to https://site.test//evil.example/ is enough to send a visitor
// there while the site is under attack.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, domain, rawExchange, statusOf, type Origin, type Proxy } from './helpers/servers.ts';

let origin: Origin;
let proxy: Proxy;
const NAV = 'accept: text/html,application/xhtml+xml,*/*;q=0.8\r\nuser-agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0\r\n';

beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startProxy({ filter: { mode: 'always' }, domains: [domain('site.test', [origin.address])] });
});
afterAll(async () => { await proxy.close(); await origin.close(); });

/** The challenge's Location, as the client would resolve it against the page it asked for. */
async function challengeTarget(target: string, local: string): Promise<URL> {
  const r = await rawExchange(proxy.port, `GET ${target} HTTP/1.1\r\nhost: site.test\r\nconnection: close\r\n${NAV}\r\n`, { localAddress: local, timeoutMs: 1500 });
  expect(statusOf(r.text)).toBe(302);
  expect(r.text).toMatch(/\r\nx-scrubber: challenge\r\n/i);
  const location = /\r\nlocation: ([^\r\n]*)\r\n/i.exec(r.text)![1];
  return new URL(location, `https://site.test${target}`);
}

describe('challenge Location', () => {
  it('a path starting with // or /\\ is sent back to the same host and path, never to the host it names', async () => {
    for (const [i, target] of ['//evil.example/', '//evil.example/a?b=c', '/\\evil.example/', '/\\/evil.example'].entries()) {
      const u = await challengeTarget(target, `127.0.91.${i + 1}`);
      expect(u.host, target).toBe('site.test');
      // The same request target again (backslashes as the browser writes them).
      expect(u.pathname + u.search, target).toBe(target.replaceAll('\\', '/'));
    }
  });

  it('an ordinary target is its own Location, unchanged', async () => {
    const u = await challengeTarget('/p/1?q=a', '127.0.91.20');
    expect(u.href).toBe('https://site.test/p/1?q=a');
  });
});
