// The pure decisions of the forwarding path, without sockets: which upstreams
// to try and in which order, the fall/rise health machine, how an error is
// classified, and header rewriting both ways.
import { describe, expect, it } from 'vitest';
import { tryOrder, type Candidate } from '../src/upstream/balancer.ts';
import { initialHealth, nextHealth, probeOk, type Health } from '../src/upstream/health.ts';
import { classify } from '../src/upstream/forward.ts';
import { clientAddress, toClientHeaders, toUpstreamHeaders, VIA } from '../src/upstream/headers.ts';
import { UpstreamGroup, type Upstream } from '../src/upstream/upstreams.ts';
import { BodyLimitError } from '../src/limits/body-meter.ts';
import type { DomainConfig } from '../src/config/schema.ts';

const c = (key: string, healthy = true): Candidate => ({ key, healthy });
const keys = (xs: Candidate[]) => xs.map((x) => x.key);

describe('tryOrder', () => {
  const main = [c('a'), c('b'), c('c')];

  it('rotates the healthy main upstreams; a healthy backup comes after them all (a failover\'s last resort), never first', () => {
    expect(keys(tryOrder(main, [c('x')], 0))).toEqual(['a', 'b', 'c', 'x']);
    expect(keys(tryOrder(main, [c('x')], 1))).toEqual(['b', 'c', 'a', 'x']);
    expect(keys(tryOrder(main, [c('x')], 2))).toEqual(['c', 'a', 'b', 'x']);
    expect(keys(tryOrder(main, [c('x', false)], 0))).toEqual(['a', 'b', 'c']);
  });

  it('leaves unhealthy main upstreams out', () => {
    const m = [c('a'), c('b', false), c('c')];
    for (let rr = 0; rr < 6; rr++) expect(keys(tryOrder(m, [], rr))).not.toContain('b');
  });

  it('spreads the load evenly over the healthy ones when some are down', () => {
    // Four upstreams, one down: each of the three healthy ones must lead a third of the time,
    // not the one that follows the dead one twice as often.
    const m = [c('a'), c('b'), c('c'), c('d', false)];
    const firsts = new Map<string, number>();
    for (let rr = 0; rr < 12; rr++) { const k = tryOrder(m, [], rr)[0].key; firsts.set(k, (firsts.get(k) ?? 0) + 1); }
    expect(Object.fromEntries(firsts)).toEqual({ a: 4, b: 4, c: 4 });
  });

  it('uses healthy backups in list order when every main upstream is down', () => {
    const m = [c('a', false), c('b', false)];
    expect(keys(tryOrder(m, [c('x'), c('y')], 0))).toEqual(['x', 'y']);
    expect(keys(tryOrder(m, [c('x'), c('y')], 1))).toEqual(['x', 'y']);
    expect(keys(tryOrder(m, [c('x', false), c('y')], 1))).toEqual(['y']);
  });

  it('fails open: everything down means everything is tried, main first', () => {
    const m = [c('a', false), c('b', false)];
    expect(keys(tryOrder(m, [c('x', false)], 1))).toEqual(['b', 'a', 'x']);
  });
});

describe('UpstreamGroup.order', () => {
  const domain = { name: 'x.test' } as DomainConfig;
  const up = (key: string, healthy = true) => ({ key, healthy }) as unknown as Upstream;

  it('round robin over 16 upstreams leads with each one equally often', () => {
    const main = Array.from({ length: 16 }, (_, i) => up(`u${i}`));
    const g = new UpstreamGroup(domain, main, []);
    const counts = new Map<string, number>();
    for (let i = 0; i < 160; i++) { const k = g.order()[0].key; counts.set(k, (counts.get(k) ?? 0) + 1); }
    expect([...counts.values()]).toEqual(Array(16).fill(10));
  });
});

describe('nextHealth', () => {
  const run = (h: Health, seq: boolean[], fall = 3, rise = 2) => seq.reduce((s, ok) => nextHealth(s, ok, fall, rise), h);

  it('goes down after `fall` failures in a row, not before', () => {
    expect(run(initialHealth(), [false, false]).healthy).toBe(true);
    expect(run(initialHealth(), [false, false, false]).healthy).toBe(false);
  });

  it('a success in between resets the failure count', () => {
    expect(run(initialHealth(), [false, false, true, false, false]).healthy).toBe(true);
  });

  it('comes back after `rise` successes in a row, not before', () => {
    const down = run(initialHealth(), [false, false, false]);
    expect(run(down, [true]).healthy).toBe(false);
    expect(run(down, [true, false, true]).healthy).toBe(false);
    expect(run(down, [true, true]).healthy).toBe(true);
  });

  it('fall 1 / rise 1 flip on every result', () => {
    expect(run(initialHealth(), [false], 1, 1).healthy).toBe(false);
    expect(run(initialHealth(), [false, true], 1, 1).healthy).toBe(true);
  });

  it('probeOk: tcp needs reachability, http needs a good status', () => {
    expect(probeOk({ reachable: true, connectMs: 1, status: null, error: null }, 'tcp')).toBe(true);
    expect(probeOk({ reachable: true, connectMs: 1, status: 500, error: 'status 500' }, 'tcp')).toBe(true);
    expect(probeOk({ reachable: true, connectMs: 1, status: 500, error: 'status 500' }, 'http')).toBe(false);
    expect(probeOk({ reachable: false, connectMs: null, status: null, error: 'ECONNREFUSED' }, 'tcp')).toBe(false);
  });
});

describe('classify', () => {
  const e = (code: string) => Object.assign(new Error(code), { code });
  it('tells connect timeouts, refusals, resets, response timeouts and body limits apart', () => {
    expect(classify(e('UND_ERR_CONNECT_TIMEOUT'))).toBe('connect-timeout');
    expect(classify(e('ETIMEDOUT'))).toBe('connect-timeout');
    expect(classify(e('ECONNREFUSED'))).toBe('connect');
    expect(classify(e('EHOSTUNREACH'))).toBe('connect');
    expect(classify(e('ECONNRESET'))).toBe('reset');
    expect(classify(e('UND_ERR_SOCKET'))).toBe('reset');
    expect(classify(e('UND_ERR_HEADERS_TIMEOUT'))).toBe('response-timeout');
    expect(classify(new BodyLimitError('body-too-large'))).toBe('body');
    expect(classify(e('UND_ERR_BODY_TIMEOUT'))).toBe('other');
    expect(classify(new Error('no code'))).toBe('other');
  });
});

describe('header rewriting', () => {
  const info = { client: '10.0.0.9', proto: 'https' as const, host: 'site.test' };
  const asMap = (h: string[] | Record<string, string | string[]>) => {
    const flat = Array.isArray(h) ? h : Object.entries(h).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).flatMap((one) => [k, one]));
    const m = new Map<string, string[]>();
    for (let i = 0; i < flat.length; i += 2) { const k = flat[i].toLowerCase(); m.set(k, [...(m.get(k) ?? []), flat[i + 1]]); }
    return m;
  };

  it('to upstream: appends X-Forwarded-For, replaces -Proto/-Host, adds Via, strips hop-by-hop and Connection-named headers', () => {
    const out = asMap(toUpstreamHeaders([
      'Host', 'site.test', 'X-Forwarded-For', '1.2.3.4', 'X-Forwarded-Proto', 'gopher', 'X-Forwarded-Host', 'evil.test',
      'Connection', 'keep-alive, X-Secret', 'Keep-Alive', 'timeout=5', 'X-Secret', 's', 'TE', 'trailers', 'Upgrade', 'h2c',
      'Proxy-Authorization', 'Basic x', 'Via', '1.0 other', 'Cookie', 'a=1', 'Cookie', 'b=2',
    ], info));
    expect(out.get('x-forwarded-for')).toEqual(['1.2.3.4, 10.0.0.9']);
    expect(out.get('x-forwarded-proto')).toEqual(['https']);
    expect(out.get('x-forwarded-host')).toEqual(['site.test']);
    expect(out.get('via')).toEqual([`1.0 other, ${VIA}`]);
    for (const h of ['connection', 'keep-alive', 'x-secret', 'te', 'upgrade', 'proxy-authorization']) expect(out.has(h), h).toBe(false);
    expect(out.get('cookie')).toEqual(['a=1', 'b=2']);
    expect(out.get('host')).toEqual(['site.test']);
  });

  it('to upstream for an upgrade: keeps Upgrade and says Connection: upgrade', () => {
    const out = asMap(toUpstreamHeaders(['Host', 'h', 'Connection', 'Upgrade, X-Secret', 'Upgrade', 'websocket', 'X-Secret', 's'], info, true));
    expect(out.get('upgrade')).toEqual(['websocket']);
    expect(out.get('connection')).toEqual(['upgrade']);
    expect(out.has('x-secret')).toBe(false);
  });

  it('to client: strips hop-by-hop and Connection-named headers, keeps repeated ones, appends Via', () => {
    const out = asMap(toClientHeaders({
      'content-type': 'text/plain', connection: 'close, x-internal', 'x-internal': '1', 'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked', 'set-cookie': ['a=1', 'b=2'], via: '1.1 app', 'x-app': 'yes',
    }));
    expect(out.get('set-cookie')).toEqual(['a=1', 'b=2']);
    expect(out.get('via')).toEqual([`1.1 app, ${VIA}`]);
    expect(out.get('x-app')).toEqual(['yes']);
    for (const h of ['connection', 'x-internal', 'keep-alive', 'transfer-encoding']) expect(out.has(h), h).toBe(false);
  });

  it('IPv4-mapped IPv6 client addresses are written as IPv4', () => {
    expect(clientAddress('::ffff:127.0.0.7')).toBe('127.0.0.7');
    expect(clientAddress('::1')).toBe('::1');
    expect(clientAddress(undefined)).toBe('unknown');
  });
});
