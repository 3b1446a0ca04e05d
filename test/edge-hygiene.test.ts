// Framing tricks that Node's parser lets through (or that a proxy must refuse
// itself) get a 400/405/431 and are never forwarded.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, rawExchange, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { checkRequest } from '../src/http/hygiene.ts';

let origin: Origin;
let proxy: Proxy;

beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startProxy({ limits: { maxHeaderCount: 20 }, domains: [domain('site.test', [origin.address])] });
});
afterAll(async () => { await proxy.close(); await origin.close(); });
beforeEach(() => { origin.seen.length = 0; });

const statusOf = (text: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);

const cases: [string, string, number][] = [
  ['two Host lines', 'GET / HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\n\r\n', 400],
  ['more header lines than the limit', 'GET / HTTP/1.1\r\nHost: site.test\r\n' + Array.from({ length: 25 }, (_, i) => `X-H${i}: v\r\n`).join('') + '\r\n', 431],
  ['CONNECT', 'CONNECT site.test:443 HTTP/1.1\r\nHost: site.test:443\r\n\r\n', 405],
  ['TRACE', 'TRACE / HTTP/1.1\r\nHost: site.test\r\n\r\n', 405],
  ['absolute-form target naming another host', 'GET http://other.test/ HTTP/1.1\r\nHost: site.test\r\n\r\n', 400],
  ['Content-Length with Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
  ['two different Content-Length values', 'POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde', 400],
  ['obfuscated Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n', 400],
  ['a header without a colon', 'GET / HTTP/1.1\r\nHost: site.test\r\nBroken header\r\n\r\n', 400],
  ['no Host at all', 'GET / HTTP/1.1\r\n\r\n', 400],
  ['a head larger than maxHeaderBytes', 'GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: ' + 'a'.repeat(20000) + '\r\n\r\n', 431],
];

describe('refused before forwarding', () => {
  for (const [name, wire, status] of cases) {
    it(`${name} → ${status}`, async () => {
      const r = await rawExchange(proxy.port, wire, { timeoutMs: 1500 });
      expect(statusOf(r.text)).toBe(status);
      expect(r.text.toLowerCase()).toContain('x-scrubber:');
      expect(origin.seen).toHaveLength(0);
    });
  }

  it('a clean request on the same listener is forwarded (the cases above are not refused for another reason)', async () => {
    const r = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n');
    expect(statusOf(r.text)).toBe(200);
    expect(origin.seen).toHaveLength(1);
  });

  it('the proxy keeps serving after the bad requests', async () => {
    const r = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n');
    expect(r.text).toContain('ok from');
  });
});

describe('checkRequest (pure)', () => {
  it('accepts OPTIONS *', () => expect(checkRequest('OPTIONS', '*', ['Host', 'a'], 10)).toBeNull());
  it('accepts repeated identical Content-Length', () => expect(checkRequest('POST', '/', ['Host', 'a', 'Content-Length', '3', 'content-length', '3'], 10)).toBeNull());
});
