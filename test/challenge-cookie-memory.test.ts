// The challenge keeps the tokens it verified (token → client id, up to 50,000)
// so that a trusted browser's every asset costs a look-up, not an HMAC. The
// token is cut out of the Cookie header; a cut of a long string is, in V8, a
// view that keeps the whole header alive. Kept as the cache's key, each token
// would hold its request's Cookie header (up to limits.maxHeaderBytes, 16 KiB):
// 50,000 padded headers, each with a token anyone gets for one request, are
// most of a gigabyte that no bound accounts for.
import { describe, expect, it } from 'vitest';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createSecretKey, randomBytes } from 'node:crypto';
import { CookieChallenge } from '../src/challenge/cookie.ts';
import type { RequestHead } from '../src/http/head.ts';

const head = (cookie: string, source: string): RequestHead => ({
  method: 'GET', version: '1.1', url: '/', rawHeaders: [], headers: { cookie }, authority: 'site.test', source, client: source, tls: false, newConnection: true, headBytes: 0,
});

describe('verified tokens', () => {
  it('keep no Cookie header alive', () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const challenge = new CookieChallenge(createSecretKey(randomBytes(32)), 'scrubber_trust');
    const now = Date.now();
    const N = 2000;
    const tokens: string[] = [];
    for (let i = 0; i < N; i++) {
      const setCookie = String(challenge.issue(head('', '10.0.0.1'), 'site.test', now, 3_600_000).headers!['set-cookie']);
      tokens.push(setCookie.slice(setCookie.indexOf('=') + 1, setCookie.indexOf(';')));
    }
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < N; i++) {
      // A header built at run time, as the parser's are: 16 KiB of other cookies, then the token.
      const padding = `pad=${String(i).padStart(6, '0')}${'x'.repeat(16_000)}`;
      expect(challenge.client(head(`${padding}; scrubber_trust=${tokens[i]}`, `10.${i >> 8}.${i & 255}.1`), 'site.test', now + 1)).not.toBeNull();
    }
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    // 2000 tokens and their entries are well under 2 MB; 2000 retained headers are 32 MB.
    expect(grown).toBeLessThan(4_000_000);
    // (The challenge, still in use here, is what keeps the cache alive through the measure.)
    expect(challenge.client(head(`scrubber_trust=${tokens[0]}`, '10.0.0.1'), 'site.test', now + 2)).not.toBeNull();
  });
});
