// One browser, one site, over HTTPS and plain HTTP (both listeners, as most
// sites are served). Over HTTPS the challenge cookie is Secure; a browser that
// holds a Secure cookie refuses to store a non-Secure one of the same name sent
// over HTTP ("Leave Secure Cookies Alone", RFC 6265bis §5.7, in every major
// browser). Were both cookies to share a name, every http:// page would answer
// the challenge with a cookie the browser throws away: a redirect loop, and
// challenges never answered, for a real visitor.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import fs from 'node:fs';
import { startOrigin, startProxy, domain, type Origin, type Proxy } from './helpers/servers.ts';
import { makePki, type TestPki } from './helpers/certs.ts';

let pki: TestPki;
let origin: Origin;
let proxy: Proxy;
let tlsPort: number;
const NAV = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0', 'accept-language': 'en', host: 'site.test' };

beforeAll(async () => {
  pki = makePki();
  origin = await startOrigin();
  proxy = await startProxy({
    filter: { mode: 'always' },
    tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['site.test'], ...pki.leaf('site.test') }] },
    domains: [domain('site.test', [origin.address])],
  });
  tlsPort = proxy.app.listeners.addresses().find((x) => x.tls)!.port;
});
afterAll(async () => { await proxy.close(); await origin.close(); });

interface Cookie { name: string; value: string; secure: boolean }

/** A browser's cookie jar, as far as this needs: host-only, Path=/, and the secure-cookie rule of RFC 6265bis §5.7. */
class Jar {
  readonly cookies: Cookie[] = [];
  store(setCookie: string[] | undefined, secureScheme: boolean): void {
    for (const line of setCookie ?? []) {
      const [kv, ...attrs] = line.split(';').map((s) => s.trim());
      const i = kv.indexOf('=');
      const c = { name: kv.slice(0, i), value: kv.slice(i + 1), secure: attrs.some((a) => a.toLowerCase() === 'secure') };
      if (c.secure && !secureScheme) continue;
      if (c.name.startsWith('__Secure-') && !c.secure) continue;
      if (!secureScheme && this.cookies.some((o) => o.name === c.name && o.secure)) continue; // leave secure cookies alone
      const at = this.cookies.findIndex((o) => o.name === c.name);
      if (at >= 0) this.cookies.splice(at, 1);
      this.cookies.push(c);
    }
  }
  header(secureScheme: boolean): string { return this.cookies.filter((c) => secureScheme || !c.secure).map((c) => `${c.name}=${c.value}`).join('; '); }
}

function get(secure: boolean, jar: Jar, localAddress: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const cookie = jar.header(secure);
    const opts = { host: '127.0.0.1', path: '/', localAddress, agent: false, headers: { ...NAV, ...(cookie ? { cookie } : {}) } } as const;
    const done = (res: http.IncomingMessage) => { jar.store(res.headers['set-cookie'], secure); res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); };
    const req = secure ? https.request({ ...opts, port: tlsPort, servername: 'site.test', ca: fs.readFileSync(pki.ca) }, done) : http.request({ ...opts, port: proxy.port }, done);
    req.on('error', reject);
    req.end();
  });
}

describe('challenge cookie over HTTPS and HTTP', () => {
  it('a browser that passed over HTTPS passes over HTTP after at most one challenge, and still over HTTPS', async () => {
    const jar = new Jar();
    const L = '127.0.92.1';
    expect(await get(true, jar, L)).toBe(302);
    expect(jar.cookies.every((c) => c.secure)).toBe(true);
    expect(await get(true, jar, L)).toBe(200);
    const http1 = await get(false, jar, L);
    expect([200, 302]).toContain(http1);
    expect(await get(false, jar, L)).toBe(200);
    expect(await get(true, jar, L)).toBe(200);
  });

  it('a browser that passed over HTTP passes over HTTPS at once', async () => {
    const jar = new Jar();
    const L = '127.0.92.2';
    expect(await get(false, jar, L)).toBe(302);
    expect(await get(false, jar, L)).toBe(200);
    expect(await get(true, jar, L)).toBe(200);
  });
});
