// Ordinary clients the always-enforced rules must not take for attackers, with the DEFAULT config (filter.mode auto,
// no attack, default rules, no timeScale): a poller of one not-yet-ready resource, people typing an alias the config
// lacks, browsers' unused preconnects. Real origin, real proxy, clients bound to their own 127.x addresses. Each test
// failed on the code before 2026-11-29 (a reviewer's).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { startOrigin, startProxy, domain, sleep, type Origin, type Proxy } from './helpers/servers.ts';

const HOST = 'shop.test';
const API = { 'user-agent': 'MyShopApp/4.1 (Android 14)', accept: 'application/json' };
const PAGE = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0', accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'accept-language': 'en' };

let origin: Origin;
let proxy: Proxy;
let readyAfter = Infinity; // /api/jobs/7/result: 404 until this many polls were made

beforeAll(async () => {
  let polls = 0;
  origin = await startOrigin((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/api/jobs/7/result') {
      polls++;
      if (polls <= readyAfter) { res.writeHead(404, { 'content-type': 'application/json' }); res.end('{"error":"not ready"}'); return; }
      res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"result":42}'); return;
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<html>page</html>');
  });
  proxy = await startProxy({ domains: [domain(HOST, [origin.address])] }); // filter: all defaults (mode auto)
});
afterAll(async () => { await proxy?.close(); await origin?.close(); });

interface Res { status: number; error?: string }
function hit(path: string, o: { local: string; headers: Record<string, string>; host?: string }): Promise<Res> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.port, path, agent: false, localAddress: o.local, headers: { host: o.host ?? HOST, ...o.headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
      res.on('error', (e) => resolve({ status: 0, error: e.message }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, error: (e as NodeJS.ErrnoException).code ?? e.message }));
    req.end();
  });
}

describe('default filter, no attack', () => {
  // a client polling ONE resource that answers 404 until it exists ("wait until the job result / uploaded
  // object is there", as SDK waiters and a page's fetch() do) is banned as a "404 scanner" for an hour, in auto mode
  // with no attack, after ~13 polls at one a second. Its address is then dropped at accept for every domain (a whole NAT with it).
  // The rule is documented as catching "404 scanning" (README Filtering table: `probe` ... "404 scanning"; rules.ts:
  // "People rarely meet ten 404s on pages ... scanners meet hundreds"); a scan spreads over many paths, while this
  // client asks for the same path every time. SPEC §6: `auto` "blocks only while an attack on that domain is detected";
  // only signals "people never produce" are enforced always (rules.ts:44-45).
  // Until 2026-11-29: src/detect/extract.ts:65 counts every 404/410 on a non-asset path as `notFound`, whether or not the source
  // already missed that very path (the path ring result `seen`, extract.ts:52, already tells a repeated path from a new one).
  it('a client polling one not-yet-ready resource (404 until ready) once a second is not banned as a 404 scanner', async () => {
    const local = '127.0.71.1';
    readyAfter = 40;
    const statuses: (number | string)[] = [];
    for (let i = 0; i < 20; i++) { // once a second for 20 s
      const r = await hit('/api/jobs/7/result', { local, headers: API });
      statuses.push(r.status || r.error || 'error');
      await sleep(1000);
    }
    const ban = proxy.app.filter.banOf(local);
    expect(ban?.reason ?? 'not banned').toBe('not banned');
    expect(statuses.filter((s) => s !== 404)).toEqual([]);
  }, 40_000);

  // a request for a Host the proxy does not serve (421 unknown-host) counts as a MALFORMED request, a rule
  // enforced always and never shared between the people behind one address (engine.ts:16 PER_CLIENT). So people
  // behind one NAT who type the site's `www.` name (DNS points it at the proxy, the config lists only the bare name:
  // the commonest alias slip, or a name whose domain was just removed from the config) get their whole address banned
  // for 30 min after some twenty page loads, in auto mode with no attack, and it is then dropped at accept for the
  // configured domain too: the NAT's users of shop.test lose the site. SPEC §6: per-source judgement "do[es] not
  // refuse many people sharing one address"; `auto` "blocks only while an attack on that domain is detected"; the
  // always-enforced rules are for signals "people never produce" (README Modes, rules.ts:44-45). A 421 is people's
  // DNS/config, not garbage from the client.
  // Until 2026-11-29: src/detect/detector.ts:137-141 (`k === null`: "Refused before routing: unknown Host, malformed request")
  // adds `badRequest` for every unrouted request, lumping a well-formed request for an unknown name with parse errors.
  it('people behind one NAT address who type an unconfigured www. name are not banned from the configured site', async () => {
    const nat = '127.0.72.1';
    const statuses: (number | string)[] = [];
    // 12 people, one page each (the page and the browser's favicon), spread over ~12 s.
    for (let person = 0; person < 12; person++) {
      for (const path of ['/', '/favicon.ico']) {
        const r = await hit(path, { local: nat, host: 'www.shop.test', headers: PAGE });
        statuses.push(r.status || r.error || 'error');
      }
      await sleep(1000);
    }
    expect(statuses[0]).toBe(421); // a well-formed request for a name not served here
    // Another person at the same address, on the configured name:
    const r = await hit('/', { local: nat, headers: PAGE });
    expect(proxy.app.filter.banOf(nat)?.reason ?? 'not banned').toBe('not banned');
    expect(r.status).toBe(200);
  }, 40_000);

  // a connection that is opened and never used (no byte sent: a browser's speculative preconnect, opened when
  // a link is hovered or a URL typed, and dropped unused; a client pool's warm spare) is counted as a SLOWLORIS when
  // the head deadline (limits.headerTimeoutMs, 10 s) closes it. The `slow` rule is enforced always, with a capacity
  // of 3 and a leak of one per 20 s, and is never shared between the people behind one address (engine.ts:16
  // PER_CLIENT): four unused preconnects from one NAT address within a minute ban the address for an HOUR, in auto
  // mode with no attack, and its people are then dropped at accept. SPEC §6: caps and judgement "do not refuse many
  // people sharing one address (a NAT)"; README: the rules enforced always are those "people never trip", `slow` is
  // for "slowloris, slow POST" (a slowloris sends a partial head; this sends nothing). An idle kept-alive connection
  // closed by limits.idleTimeoutMs is not held against anyone either; nginx's client_header_timeout just closes.
  // Until 2026-11-29: Node's HPE_HEADERS_TIMEOUT is raised for a connection with no byte at all too; src/listen/client-errors.ts:22
  // reports it as is, and src/detect/verdict.ts:17 (SLOW_CODES) / detector.ts:170-175 count it as `slow`, with no check
  // that any byte of a request arrived.
  it('four unused browser preconnects from one NAT address (no byte sent) do not get the address banned as slowloris', async () => {
    const nat = '127.0.73.1';
    const closed: Promise<void>[] = [];
    for (let person = 0; person < 4; person++) {
      const s = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: nat });
      s.on('error', () => {});
      s.resume();
      closed.push(new Promise((r) => s.on('close', () => r())));
      await sleep(1000); // four people, a second apart, each with one speculative connection left unused
    }
    await Promise.race([Promise.all(closed), sleep(20_000)]); // the proxy closes them at its head deadline (10 s)
    await sleep(300);
    // A fifth person at the address loads the site.
    const r = await hit('/', { local: nat, headers: PAGE });
    expect(proxy.app.filter.banOf(nat)?.reason ?? 'not banned').toBe('not banned');
    expect(r.status).toBe(200);
  }, 40_000);
});
