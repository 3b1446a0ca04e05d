// Attack mode on a saturated origin, on a fake clock, through the filter as the
// app builds it (createFilter), with the origin's saturation given (what the
// adaptive limit would say): a crowd of people browsing (pages, their assets,
// a person's pace) waiting for a saturated origin is not an attack; a bot that
// fetches assets but never pauses, or a rotating page flood, is. Then the
// fair-share ban: decided by the filter's mode, the attack state and the
// whitelist.
import { describe, expect, it } from 'vitest';
import { loadConfigObject } from '../src/config/load.ts';
import { openStore } from '../src/store/db.ts';
import { createLogger } from '../src/log.ts';
import { createFilter } from '../src/app/build-filter.ts';
import type { RequestHead } from '../src/http/head.ts';
import type { Observation } from '../src/observe/observation.ts';
import { tempDir } from './helpers/servers.ts';

const HOST = 'sat.test';
const BROWSER = { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0', accept: 'text/html,*/*', 'accept-language': 'en' };

function setup(filter: Record<string, unknown> = {}, saturated = true, heavy?: (domain: string, source: string) => boolean) {
  const r = loadConfigObject({ log: { level: 'silent' }, state: { dir: tempDir() }, filter, domains: [{ name: HOST, upstreams: ['127.0.0.1:9'] }] }, {});
  if (!r.ok) throw new Error(r.problems.join('\n'));
  const clock = { now: 1_700_000_000_000 };
  const f = createFilter(r.config, { db: openStore(r.config.state.dir), log: createLogger('silent'), now: () => clock.now, saturated: () => saturated, heavy });
  const domain = r.config.domains[0];
  const head = (source: string, url: string): RequestHead => ({
    method: 'GET', version: '1.1', url, rawHeaders: Object.entries(BROWSER).flat(), headers: BROWSER, authority: HOST, source, client: source, tls: false, newConnection: false, headBytes: 200,
  });
  /** One request that waited 80 ms in the queue: judged, then observed as the flow would. */
  const request = (source: string, url: string) => {
    f.detector.judge(head(source, url), domain, false);
    const asset = url.startsWith('/static/');
    const o: Observation = {
      domain: HOST, source, client: source, method: 'GET', path: url, status: 200, bytesIn: 200, bytesOut: 2000, durationMs: 100,
      contentType: asset ? 'text/css' : 'text/html', outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: false, queuedMs: 80, upstreamMs: 20,
    };
    f.detector.observe(o);
  };
  const second = () => { for (let t = 0; t < 4; t++) { clock.now += 250; f.tick(); } };
  const under = () => f.attackState(HOST)?.under === true;
  return { f, request, second, under, clock };
}

describe('attack mode on a saturated origin', () => {
  it('a crowd of new visitors browsing at a person\'s pace is not an attack, however saturated the origin', () => {
    const { request, second, under } = setup();
    for (let s = 0; s < 8; s++) {
      // 60 people, each a page and its three assets every two seconds (half of them each second).
      for (let i = s % 2; i < 60; i += 2) {
        const ip = `10.1.0.${i + 1}`;
        request(ip, `/products/${s}`);
        for (const a of ['site.css', 'app.js', 'logo.png']) request(ip, `/static/${a}`);
      }
      second();
      expect(under(), `second ${s}`).toBe(false);
    }
  });

  it('browser-like sources at a modest pace that each take over their share of the origin are no crowd: attack mode starts', () => {
    const { request, second, under } = setup({}, true, (_d, source) => source.startsWith('10.4.'));
    let at = -1;
    for (let s = 0; s < 6 && at < 0; s++) {
      for (let i = s % 2; i < 30; i += 2) {
        const ip = `10.4.0.${i + 1}`;
        request(ip, `/search?q=${s}`);
        for (const a of ['site.css', 'app.js', 'logo.png']) request(ip, `/static/${a}`);
      }
      second();
      if (under()) at = s;
    }
    expect(at).toBe(1);
  });

  it('a bot that fetches the assets but never pauses is no crowd: attack mode starts', () => {
    const { f, request, second, under } = setup();
    let at = -1;
    for (let s = 0; s < 8 && at < 0; s++) {
      for (let k = 0; k < 25; k++) for (let b = 0; b < 4; b++) { request(`10.2.0.${b + 1}`, `/search?q=${k}`); request(`10.2.0.${b + 1}`, '/static/site.css'); }
      second();
      if (under()) at = s;
    }
    // Its score must first climb past a person's line (25 pages a second: about four seconds), then two hot seconds.
    expect(at).toBeGreaterThanOrEqual(0);
    expect(at).toBeLessThanOrEqual(6);
    expect(f.attackState(HOST)!.reason).toMatch(/origin saturated/);
  });

  it('a rotating page flood on a saturated origin starts attack mode in two seconds, with nothing learned', () => {
    const { f, request, second, under } = setup();
    let n = 0;
    for (let s = 0; s < 2; s++) { for (let i = 0; i < 200; i++) request(`10.3.${(n >> 8) & 255}.${n++ & 255}`, '/'); second(); }
    expect(under()).toBe(true);
    expect(f.attackState(HOST)!.learned).toBe(0);
  });

  it('the same flood on an origin that keeps up is no sign (with a baseline not yet learned)', () => {
    const { request, second, under } = setup({}, false);
    let n = 0;
    for (let s = 0; s < 5; s++) { for (let i = 0; i < 200; i++) request(`10.3.${(n >> 8) & 255}.${n++ & 255}`, '/'); second(); }
    expect(under()).toBe(false);
  });
});

describe('fair-share bans', () => {
  it('never in mode off; in auto only while the domain is under attack; never a whitelisted source; with the reason given', () => {
    const off = setup({ mode: 'off' });
    expect(off.f.banOverShare('10.9.0.1', HOST, 'x')).toBe(false);
    const auto = setup({ mode: 'auto', whitelist: ['10.9.1.0/24'] });
    expect(auto.f.banOverShare('10.9.0.1', HOST, 'x')).toBe(false);
    let n = 0;
    for (let s = 0; s < 2; s++) { for (let i = 0; i < 200; i++) auto.request(`10.3.${(n >> 8) & 255}.${n++ & 255}`, '/'); auto.second(); }
    expect(auto.under()).toBe(true);
    expect(auto.f.banOverShare('10.9.1.7', HOST, 'x')).toBe(false);
    expect(auto.f.banOverShare('10.9.0.1', HOST, 'took 9.0 s of origin time')).toBe(true);
    const ban = auto.f.banOf('10.9.0.1')!;
    expect(ban.rule).toBe('fair-share');
    expect(ban.reason).toMatch(/took 9\.0 s of origin time/);
    expect(auto.f.banOverShare('10.9.0.1', HOST, 'again')).toBe(false);
    expect(setup({ mode: 'always' }).f.banOverShare('10.9.0.2', HOST, 'x')).toBe(true);
  });
});
