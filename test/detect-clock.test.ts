// Detection and attack mode on a fake clock: no sockets, no sleeps. The filter
// is built as the app builds it (createFilter) on a real embedded store, with
// its clock injected; requests arrive as protocol-neutral heads and finished
// requests as observations, the way the flow hands them over.
import { describe, expect, it } from 'vitest';
import { loadConfigObject } from '../src/config/load.ts';
import { openStore } from '../src/store/db.ts';
import { createLogger } from '../src/log.ts';
import { createFilter } from '../src/app/build-filter.ts';
import type { RequestHead } from '../src/http/head.ts';
import type { Observation } from '../src/observe/observation.ts';
import { requestEvents, answerEvents, FOUND_OFFSETS_MISS } from '../src/detect/extract.ts';
import { SourceState } from '../src/detect/sources.ts';
import { DomainKnowledge } from '../src/detect/knowledge.ts';
import { newPending } from '../src/detect/engine.ts';
import { EVENT_INDEX as E } from '../src/detect/rules.ts';
import { tempDir } from './helpers/servers.ts';

const HOST = 'clock.test';
const BROWSER = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0', accept: 'text/html,*/*', 'accept-language': 'en' };

function setup(filter: Record<string, unknown>) {
  const r = loadConfigObject({ log: { level: 'silent' }, state: { dir: tempDir() }, filter, domains: [{ name: HOST, upstreams: ['127.0.0.1:9'] }] }, {});
  if (!r.ok) throw new Error(r.problems.join('\n'));
  const clock = { now: 1_700_000_000_000 };
  const f = createFilter(r.config, { db: openStore(r.config.state.dir), log: createLogger('silent'), now: () => clock.now });
  const domain = r.config.domains[0];
  const head = (source: string, url = '/', headers: Record<string, string> = BROWSER): RequestHead => ({
    method: 'GET', version: '1.1', url, rawHeaders: Object.entries(headers).flat(), headers, authority: HOST, source, client: source, tls: false, newConnection: false, headBytes: 200,
  });
  const obs = (source: string, o: Partial<Observation> = {}): Observation => ({
    domain: HOST, source, client: source, method: 'GET', path: '/', status: 200, bytesIn: 200, bytesOut: 2000, durationMs: 5,
    contentType: 'text/html', outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: false, queuedMs: 0, upstreamMs: 5, ...o,
  });
  /** Advances the clock, ticking the filter every 250 ms as the app's timer does. */
  const advance = (ms: number) => { for (let t = 0; t < ms; t += 250) { clock.now += Math.min(250, ms - t); f.tick(); } };
  return { f, d: f.detector, domain, head, obs, clock, advance };
}

describe('detection on a fake clock', () => {
  it('a flood from one source is banned within its first second; the ban lifts when its time is up', () => {
    const { f, d, domain, head, advance } = setup({ mode: 'always', timeScale: 0.001 });
    let banned = -1;
    for (let i = 0; i < 400 && banned < 0; i++) {
      if (d.judge(head('10.0.0.1'), domain, false).kind === 'drop') banned = i;
      advance(i % 100 === 99 ? 250 : 0);
    }
    expect(banned).toBeGreaterThan(0);
    expect(banned).toBeLessThan(400);
    const ban = f.banOf('10.0.0.1')!;
    expect(ban.rule).toMatch(/flood|rate-extreme|challenge/);
    expect(d.judge(head('10.0.0.2'), domain, false).kind).not.toBe('drop');
    advance(ban.expiresAt - ban.since + 1000);
    expect(f.banOf('10.0.0.1')).toBeUndefined();
  });

  it('in always mode a new source is challenged, passes with the cookie, and is banned after ignoring the challenge again and again', () => {
    const { f, d, domain, head, advance } = setup({ mode: 'always' });
    const v = d.judge(head('10.0.1.1'), domain, false);
    expect(v.kind).toBe('challenge');
    if (v.kind !== 'challenge') return;
    const cookie = String(v.answer.headers!['set-cookie']).split(';')[0];
    expect(d.judge(head('10.0.1.1', '/', { ...BROWSER, cookie }), domain, false).kind).toBe('pass');
    // An upgrade cannot follow a redirect: it is dropped instead of challenged.
    expect(d.judge(head('10.0.1.2'), domain, true).kind).toBe('drop');
    const kinds: string[] = [];
    for (let i = 0; i < 12 && !f.banOf('10.0.1.3'); i++) { kinds.push(d.judge(head('10.0.1.3'), domain, false).kind); advance(1000); }
    expect(kinds[0]).toBe('challenge');
    expect(f.banOf('10.0.1.3')?.rule).toBe('challenge');
  });

  it('attack mode: learns a baseline, starts on a surge within seconds, challenges newcomers, ends after calm seconds', () => {
    const { f, d, domain, head, obs, advance } = setup({ mode: 'auto', attack: { learnSeconds: 30, enterSeconds: 2, exitSeconds: 10 } });
    // 30 s of calm traffic: 25 req/s from 50 sources.
    for (let s = 0; s < 30; s++) {
      for (let i = 0; i < 25; i++) { const src = `10.1.0.${(s * 25 + i) % 50 + 1}`; d.judge(head(src), domain, false); d.observe(obs(src)); }
      advance(1000);
    }
    expect(f.attackState(HOST)?.under).toBe(false);
    expect(d.judge(head('10.9.0.1'), domain, false).kind).toBe('pass');
    // A surge: 20x the rate, from many new sources.
    let started = -1;
    for (let s = 0; s < 8 && started < 0; s++) {
      for (let i = 0; i < 500; i++) { const src = `10.2.${Math.floor(i / 250)}.${(i % 250) + 1}`; d.judge(head(src), domain, false); }
      advance(1000);
      if (f.attackState(HOST)?.under) started = s + 1;
    }
    expect(started).toBeGreaterThan(0);
    expect(started).toBeLessThanOrEqual(4);
    expect(d.judge(head('10.9.0.2'), domain, false).kind).toBe('challenge');
    // Calm again: the attack ends after exitSeconds.
    for (let s = 0; s < 15; s++) { d.judge(head('10.1.0.1'), domain, false); advance(1000); }
    expect(f.attackState(HOST)?.under).toBe(false);
  });

  it('an upstream answering 503 to a third of the requests is a sign of attack without any learned baseline', () => {
    const { f, d, domain, head, obs, advance } = setup({ mode: 'auto' });
    for (let s = 0; s < 4 && !f.attackState(HOST)?.under; s++) {
      for (let i = 0; i < 60; i++) { const src = `10.3.0.${i + 1}`; d.judge(head(src), domain, false); d.observe(obs(src, { status: i % 2 ? 503 : 200 })); }
      advance(1000);
    }
    expect(f.attackState(HOST)?.under).toBe(true);
    expect(f.attackState(HOST)?.reason).toMatch(/fail|503|error/i);
  });
});

describe('extraction (pure: head or observation in, events out)', () => {
  it('a request head: one request, an odd header profile, a new User-Agent', () => {
    const s = new SourceState(1);
    const p = newPending();
    const h = (ua: string, extra: Record<string, string> = {}): RequestHead => ({ method: 'GET', version: '1.1', url: '/', rawHeaders: [], headers: { 'user-agent': ua, ...extra }, authority: HOST, source: 's', client: 's', tls: false, newConnection: false, headBytes: 0 });
    requestEvents(h('curl/8.0'), s, p);
    expect([p[E.request], p[E.badHeaders], p[E.uaChange]]).toEqual([1, 2, 0]);
    requestEvents(h('python-requests/2.31', { accept: '*/*', 'accept-language': 'en' }), s, p);
    expect([p[E.request], p[E.badHeaders], p[E.uaChange]]).toEqual([2, 2, 1]);
  });

  it('an answer: new paths, cache busting, 404s, pages without assets, upstream time; static paths are learned', () => {
    const s = new SourceState(1);
    const k = new DomainKnowledge();
    const p = newPending();
    const o = (path: string, x: Partial<Observation> = {}): Observation => ({ domain: HOST, source: 's', client: 's', method: 'GET', path, status: 200, bytesIn: 0, bytesOut: 0, durationMs: 0, contentType: 'text/html', outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: false, queuedMs: 0, upstreamMs: 250, ...x });
    answerEvents(o('/a'), s, k, p, false);
    answerEvents(o('/b'), s, k, p, false);
    expect(p[E.newPath]).toBe(2);
    expect(p[E.pageNoAssets]).toBe(1);
    answerEvents(o('/b?x=1'), s, k, p, false);
    expect(p[E.cacheBust]).toBe(1);
    answerEvents(o('/nope', { status: 404 }), s, k, p, false);
    // The 404, less what the three pages found before it take back (a scan is judged by its share of misses).
    expect(p[E.notFound]).toBe(1 - 3 * FOUND_OFFSETS_MISS);
    answerEvents(o('/theme', { contentType: 'text/css', upstreamMs: 3 }), s, k, p, false);
    expect(p[E.notFound]).toBe(1 - 3 * FOUND_OFFSETS_MISS); // an asset takes nothing back
    expect(k.staticPaths.size).toBe(1);
    // An image made at a search's cost (a thumbnailer) is no static path; one learned so is forgotten when it turns so.
    answerEvents(o('/thumb', { contentType: 'image/webp', upstreamMs: 250 }), s, k, p, false);
    answerEvents(o('/theme', { contentType: 'text/css', upstreamMs: 250 }), s, k, p, false);
    expect(k.staticPaths.size).toBe(0);
    expect(p[E.upstreamSeconds]).toBeCloseTo(1.503);
    // A long poll's time (noLatency) is no cost of the application's.
    answerEvents(o('/poll', { upstreamMs: 5000, noLatency: true }), s, k, p, false);
    expect(p[E.upstreamSeconds]).toBeCloseTo(1.503);
  });

  it('misses: one path missed again and again counts once; a path missed then created takes its miss back whole', () => {
    const s = new SourceState(1);
    const k = new DomainKnowledge();
    const p = newPending();
    const o = (path: string, x: Partial<Observation> = {}): Observation => ({ domain: HOST, source: 's', client: 's', method: 'GET', path, status: 404, bytesIn: 0, bytesOut: 0, durationMs: 0, contentType: 'application/json', outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: false, queuedMs: 0, upstreamMs: 1, ...x });
    for (let i = 0; i < 20; i++) answerEvents(o('/jobs/7/result'), s, k, p, false);
    expect(p[E.notFound]).toBe(1); // a poll, not a scan
    answerEvents(o('/jobs/7/result', { status: 200 }), s, k, p, false);
    expect(p[E.notFound]).toBe(0); // found at last: the whole miss back
    for (let i = 0; i < 10; i++) {
      answerEvents(o(`/docs/${i}.pdf`, { method: 'HEAD' }), s, k, p, false);
      answerEvents(o(`/docs/${i}.pdf`, { method: 'PUT', status: 201 }), s, k, p, false);
    }
    expect(p[E.notFound]).toBe(0); // a sync client creating what it missed
    for (let i = 0; i < 10; i++) answerEvents(o(`/admin${i}.php`), s, k, p, false);
    answerEvents(o('/', { status: 200 }), s, k, p, false);
    expect(p[E.notFound]).toBe(10 - FOUND_OFFSETS_MISS); // a scan: a found page elsewhere takes back half a miss
  });

  it('a body far larger than the path usually receives counts only from a source with no browsing history', () => {
    const k = new DomainKnowledge();
    const o = (bytesIn: number): Observation => ({ domain: HOST, source: 's', client: 's', method: 'POST', path: '/api/messages', status: 201, bytesIn, bytesOut: 0, durationMs: 0, contentType: 'application/json', outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: false, queuedMs: 0, upstreamMs: 1 });
    const teacher = new SourceState(1), p0 = newPending();
    for (let i = 0; i < 5; i++) answerEvents(o(200), teacher, k, p0, true);
    const person = new SourceState(1), stranger = new SourceState(1), pp = newPending(), ps = newPending();
    for (let i = 0; i < 3; i++) { answerEvents(o(300 * 1024), person, k, pp, true); answerEvents(o(300 * 1024), stranger, k, ps, false); }
    expect([pp[E.oversizedBody], ps[E.oversizedBody]]).toEqual([0, 3]);
  });
});
