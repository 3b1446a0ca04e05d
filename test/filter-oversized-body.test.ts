// The oversized-body rule: a path learns the size of the bodies it usually
// receives from sources with a browsing history; a source that keeps posting
// bodies far larger than that is banned, without waiting for attack mode (the
// flood need not hurt the application to cost its bandwidth). Real proxy,
// real origin, each source on its own 127.x address.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, startProxy, request, domain, replier, type Origin, type Proxy } from './helpers/servers.ts';
import { BodySizes, MIN_BYTES } from '../src/detect/body-sizes.ts';

const HOST = 'forms.test';
const BROWSER = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0', accept: 'text/html,*/*;q=0.8', 'accept-language': 'en' };
let origin: Origin;
let proxy: Proxy;

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    const send = replier(res);
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'POST') { req.resume(); req.on('end', () => send(303, 'text/html', '')); return; }
    if (path.endsWith('.css')) return send(200, 'text/css', 'body{}');
    if (path.endsWith('.js')) return send(200, 'application/javascript', 'void 0');
    send(200, 'text/html; charset=utf-8', '<html>page</html>');
  });
  // Bodies past 64 KiB stream upstream (not read whole at the edge first): their bytes are told to statistics as they
  // go, and the rule must still see each body whole (until 2026-11-29 it saw only the rest after the last step told,
  // and a 1 MiB flood was never counted: the attack lab's slow-post scenario went unmitigated).
  proxy = await startProxy({ filter: { mode: 'auto' }, limits: { bufferBodyBytes: 64 * 1024 }, domains: [domain(HOST, [origin.address])] });
});
afterAll(async () => { await proxy?.close(); await origin?.close(); });

const hit = (path: string, local: string, o: { method?: string; body?: Buffer } = {}) =>
  request(proxy.url + path, { method: o.method ?? 'GET', localAddress: local, body: o.body, headers: { host: HOST, ...BROWSER, ...(o.body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(o.body.length) } : {}) } })
    .catch((e: NodeJS.ErrnoException) => ({ status: 0, headers: {}, body: e.code ?? '' }));
const listed = async (ip: string) => (await request(proxy.adminUrl + `/api/blacklist/${ip}`)).body.includes('"listed":true');

describe('oversized request bodies', () => {
  it('a visitor with a history teaches /login its usual size; 1 MiB bodies posted there again and again get the source banned', async () => {
    const visitor = '127.0.77.1';
    // Browses like a browser (a page, then assets), then logs in a few times with a small form.
    for (const p of ['/', '/site.css', '/app.js', '/about']) expect((await hit(p, visitor)).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await hit('/login', visitor, { method: 'POST', body: Buffer.from(`user=u${i}&password=secret`) })).status).toBe(303);

    const flooder = '127.0.77.2';
    const big = Buffer.alloc(1024 * 1024, 0x61);
    let posts = 0;
    for (; posts < 12 && !(await listed(flooder)); posts++) await hit('/login', flooder, { method: 'POST', body: big });
    expect(await listed(flooder)).toBe(true);
    // Capacity 5: banned on about the sixth, not the first.
    expect(posts).toBeGreaterThanOrEqual(5);
    expect(posts).toBeLessThanOrEqual(8);
    // The visitor still logs in.
    expect((await hit('/login', visitor, { method: 'POST', body: Buffer.from('user=u&password=p') })).status).toBe(303);
    expect(await listed(visitor)).toBe(false);
  });

  it('a path that has not learned its sizes judges nothing: large uploads there are not held against anyone', async () => {
    const uploader = '127.0.77.3';
    const big = Buffer.alloc(1024 * 1024, 0x62);
    for (let i = 0; i < 8; i++) expect((await hit('/upload', uploader, { method: 'POST', body: big })).status).toBe(303);
    expect(await listed(uploader)).toBe(false);
  });

  it('a source with no history cannot teach a path its sizes', async () => {
    // Small posts from a stranger, then big ones to the same fresh path: nothing was learned, nothing is judged.
    const stranger = '127.0.77.4';
    for (let i = 0; i < 5; i++) await hit('/comment', stranger, { method: 'POST', body: Buffer.from('text=hi') });
    const big = Buffer.alloc(512 * 1024, 0x63);
    for (let i = 0; i < 8; i++) expect((await hit('/comment', stranger, { method: 'POST', body: big })).status).toBe(303);
    expect(await listed(stranger)).toBe(false);
  });
});

describe('BodySizes (unit)', () => {
  it('judges only after MIN_SAMPLES, only past both the floor and FACTOR × the usual size', () => {
    const b = new BodySizes(16);
    b.learn(1, 200);
    b.learn(1, 300);
    expect(b.oversized(1, 5 * MIN_BYTES)).toBe(false); // two samples: not yet
    b.learn(1, 250);
    expect(b.oversized(1, 5 * MIN_BYTES)).toBe(true);
    expect(b.oversized(1, MIN_BYTES - 1)).toBe(false); // under the floor, whatever the ratio
    expect(b.oversized(2, 5 * MIN_BYTES)).toBe(false); // another path knows nothing
    // An upload path whose usual size is large: a large body is not out of place.
    for (let i = 0; i < 5; i++) b.learn(3, 4 * 1024 * 1024);
    expect(b.oversized(3, 8 * 1024 * 1024)).toBe(false);
    expect(b.oversized(3, 200 * 1024 * 1024)).toBe(true);
  });
});
