// Exempt traffic is no way around the filter, on real sockets in the default
// config (no maxInflight, filter.mode auto): cookie-less JSON API clients
// (an app: no cookie jar, no redirects followed) use a shop's API, then a
// rotating flood copies their headers on the expensive /api/search, each
// address sending a few requests and never coming back. The default challenge
// policy exempts such requests (they cannot do a cookie round trip), so the
// challenge cannot stop the flood, and no single source breaks a rule. What
// must stop it is cost and fair share: while the domain is under attack, the
// sources without a history share one slice of the origin. Checked:
//   - attack mode starts (the origin saturates);
//   - the flood's requests at the origin fall to a few percent of their peak;
//   - the flood's refusals are 429 + Retry-After with a JSON body, never a 302
//     or a page;
//   - the API clients (sources with a history) keep being served, none of
//     them banned or sent a 302.
// Every loop is bounded in count and in time.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { Filter as ScrubberFilter } from '../src/detect/filter.ts';
import { startProxy, domain, sleep, type Proxy } from './helpers/servers.ts';
import { attackSeconds, startPoolOrigin, type PoolOrigin } from './helpers/pool-origin.ts';

const HOST = 'shop.test';
const APP = { 'user-agent': 'MyShopApp/4.1.2 (iPhone; iOS 17.4; Scale/3.00)', accept: 'application/json', 'accept-encoding': 'gzip' };

interface Res { status: number; at: number; ms: number; retryAfter?: string; type?: string; scrubber?: string; body: string }
function call(port: number, path: string, o: { local?: string; agent: http.Agent | false; timeoutMs?: number }): Promise<Res> {
  const at = Date.now();
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host: HOST, ...APP }, agent: o.agent, localAddress: o.agent ? undefined : o.local }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { if (body.length < 500) body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, at, ms: Date.now() - at, retryAfter: res.headers['retry-after'], type: res.headers['content-type'], scrubber: res.headers['x-scrubber'] as string | undefined, body }));
      res.on('error', () => resolve({ status: 0, at, ms: Date.now() - at, body: '' }));
    });
    req.setTimeout(o.timeoutMs ?? 3000, () => req.destroy());
    req.on('error', () => resolve({ status: 0, at, ms: Date.now() - at, body: '' }));
    req.end();
  });
}

let proxy: Proxy | null = null;
let origin: PoolOrigin | null = null;
afterEach(async () => { await proxy?.close(); await origin?.close(); proxy = null; origin = null; });

describe('cookie-less API clients next to a rotating flood that copies their headers (default config)', () => {
  it('the flood, exempt from the challenge, is held to one slice of the origin (429 + JSON); the API clients with a history are served', async () => {
    // Four workers; a search costs 60 ms, another API call 5 ms; a patient queue (the origin slows down, it does not fail).
    origin = await startPoolOrigin(4, 10, 5000, 60, 5);
    proxy = await startProxy({ domains: [domain(HOST, [`127.0.0.1:${origin.port}`])], filter: { timeScale: 0.01 } });
    const f = proxy.app.filter as ScrubberFilter;
    const t0 = Date.now(), attackAt = t0 + 3000, end = attackAt + 9000;

    // Twelve API clients from the start: a product now and then, a search one time in ten, 300–500 ms apart.
    const clients: Res[] = [];
    const client = async (i: number) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: `127.0.81.${i + 1}` });
      for (let n = 0; n < 100 && Date.now() < end; n++) {
        clients.push(await call(proxy!.port, (n + i) % 10 === 0 ? `/api/search?q=s${n}` : `/api/products/${(i * 7 + n) % 40}`, { agent }));
        await sleep(300 + ((i * 53 + n * 31) % 200));
      }
      agent.destroy();
    };
    const api = Array.from({ length: 12 }, (_, i) => client(i));

    // From attackAt: rotating sources with the app's headers on /api/search, 4 requests each, 60 at once, each
    // worker at most 10 a second (the flood lasts to the end); each of its 2540 addresses is used once.
    await sleep(attackAt - Date.now());
    const flood: Res[] = [];
    let next = 0;
    const worker = async () => {
      while (Date.now() < end && next < 2540 * 4) {
        const i = next++;
        const local = `127.0.${90 + (Math.floor(i / 4 / 254) % 10)}.${(Math.floor(i / 4) % 254) + 1}`;
        const t = Date.now();
        flood.push(await call(proxy!.port, `/api/search?q=${i}`, { local, agent: false, timeoutMs: 2000 }));
        await sleep(100 - (Date.now() - t));
      }
    };
    await Promise.all([...Array.from({ length: 60 }, worker), ...api]);

    const state = f.attackState(HOST);
    expect(state?.under, 'attack mode never started').toBe(true);
    const engagedAt = state!.since;
    expect(engagedAt - attackAt).toBeLessThanOrEqual(5000);

    // The flood at the origin: its peak second against the last two seconds of the attack.
    const { secs, peak, tail, endSec } = attackSeconds(origin, end);
    expect(peak).toBeGreaterThan(20);
    expect(Math.max(...tail), JSON.stringify(secs)).toBeLessThanOrEqual(0.1 * peak);
    // Mitigated at once: from the second after the one attack mode started in, every second stays under 10% of the peak.
    const after = secs.filter(([s]) => s * 1000 >= engagedAt + 1000 && s < endSec).map(([, c]) => c.attack);
    expect(after.length).toBeGreaterThanOrEqual(3);
    expect(Math.max(...after), JSON.stringify(secs)).toBeLessThanOrEqual(0.1 * peak);

    // What the flood was told: 429 with Retry-After, JSON (it asked for JSON); never a redirect nor a page.
    expect(flood.length).toBeGreaterThan(500);
    expect(flood.filter((r) => r.status >= 300 && r.status < 400)).toEqual([]);
    const refused = flood.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThan(flood.length / 2);
    for (const r of refused.slice(0, 20)) {
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(r.type).toMatch(/application\/json/);
      expect(JSON.parse(r.body).error).toBe('too_many_requests');
    }
    expect(flood.filter((r) => r.type?.startsWith('text/html') && r.status !== 200)).toEqual([]);

    // The API clients: served throughout (a request answered 200 within 3 s), never redirected, never banned.
    expect(clients.filter((r) => r.status >= 300 && r.status < 400)).toEqual([]);
    const during = clients.filter((r) => r.at >= engagedAt);
    expect(during.length).toBeGreaterThan(100);
    const failed = during.filter((r) => r.status !== 200 || r.ms > 3000);
    expect(failed.length / during.length, JSON.stringify(failed.slice(0, 5))).toBeLessThanOrEqual(0.02);
    expect(f.bans().filter((b) => b.ip.startsWith('127.0.81.'))).toEqual([]);
  }, 30_000);
});
