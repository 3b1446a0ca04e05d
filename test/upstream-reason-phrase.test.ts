// An upstream's reason phrase may carry obs-text (RFC 9112 §4: bytes 0x80-0xFF), as servers with localised reason
// phrases send ("404 Non trouvé" in Latin-1). undici decodes the phrase as UTF-8, so such a byte became U+FFFD, which
// Node refuses to write: the response was lost and the client's connection cut with no answer at all. The status and
// the body are what matter; a phrase that cannot be written is replaced by the standard one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { startProxy, domain, rawExchange, statusOf, type Proxy } from './helpers/servers.ts';

let proxy: Proxy;
let upstream: net.Server;

beforeAll(async () => {
  upstream = net.createServer((s) => {
    s.on('error', () => {});
    let head = '';
    s.on('data', (c) => {
      head += c;
      if (!head.includes('\r\n\r\n')) return;
      head = '';
      s.write(Buffer.concat([Buffer.from('HTTP/1.1 404 Non trouv'), Buffer.from([0xe9]), Buffer.from('\r\nContent-Length: 9\r\n\r\nnot here!')]));
    });
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  proxy = await startProxy({ domains: [domain('a.test', [`127.0.0.1:${(upstream.address() as net.AddressInfo).port}`])] });
});
afterAll(async () => { await proxy?.close(); upstream?.close(); });

describe('an upstream reason phrase with a Latin-1 byte', () => {
  it('does not lose the response: its status and body reach the client', async () => {
    const r = await rawExchange(proxy.port, 'GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
    expect(statusOf(r.text)).toBe(404);
    expect(r.text.endsWith('\r\n\r\nnot here!')).toBe(true);
  });
});
