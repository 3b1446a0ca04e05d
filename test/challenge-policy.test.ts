// The per-domain challenge policy and the 429 refusal: pure functions.
import { describe, it, expect } from 'vitest';
import { challengeDecision, compileChallengePolicy, defaultChallengeDecision, DEFAULT_CHALLENGE_POLICY, validateChallengePolicy, refusal429, acceptedTypes } from '../src/challenge/policy.ts';

const NAV = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';
const CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36';
const d = (method: string, path: string, accept?: string, userAgent?: string) => challengeDecision(DEFAULT_CHALLENGE_POLICY, { method, path, accept, userAgent });

describe('default challenge policy: only browser navigations', () => {
  it('challenges GET and HEAD navigations that accept HTML', () => {
    expect(d('GET', '/', NAV, CHROME)).toBe('challenge');
    expect(d('HEAD', '/products/1', 'text/html', CHROME)).toBe('challenge');
    expect(d('get', '/', 'application/xhtml+xml')).toBe('challenge');
    expect(d('GET', '/', 'TEXT/HTML; charset=utf-8')).toBe('challenge');
  });
  it('exempts API calls, fetch/XHR, assets, curl, apps and requests with no Accept', () => {
    expect(d('GET', '/api/items', 'application/json', 'MyShopApp/3.2 (iOS 17)')).toBe('exempt');
    expect(d('GET', '/api/items', 'application/json, text/plain, */*', CHROME)).toBe('exempt'); // axios in a page
    expect(d('GET', '/', '*/*', 'curl/8.5.0')).toBe('exempt');
    expect(d('GET', '/', undefined, CHROME)).toBe('exempt');
    expect(d('GET', '/', '', 'okhttp/4.12.0')).toBe('exempt');
    expect(d('GET', '/static/logo.png', 'image/avif,image/webp,image/apng,image/*,*/*;q=0.8', CHROME)).toBe('exempt');
    expect(d('POST', '/login', NAV, CHROME)).toBe('exempt');
    expect(d('PUT', '/api/cart', 'application/json')).toBe('exempt');
    expect(d('GET', '/feed', 'application/rss+xml, application/atom+xml')).toBe('exempt');
  });
  it('does not count text/html refused with q=0', () => {
    expect(d('GET', '/', 'text/html;q=0, application/json')).toBe('exempt');
    expect(acceptedTypes('text/html;q=0.0, */*;q=0.1')).toEqual(['*/*']);
    expect(defaultChallengeDecision('GET', 'text/html;q=0.5')).toBe('challenge');
  });
});

describe('per-domain rules', () => {
  const policy = compileChallengePolicy([
    { path: '/api/', method: ['GET'], accept: 'html', action: 'challenge' },
    { path: '/api/', action: 'exempt' },
    { path: '/app/', userAgent: '^MyShopApp/', action: 'exempt' },
    { path: '/account/', accept: 'json', action: 'challenge' },
    { accept: 'none', method: ['GET'], path: '/search', action: 'challenge' },
    { accept: 'application/grpc', action: 'exempt' },
  ]);
  const p = (method: string, path: string, accept?: string, userAgent?: string) => challengeDecision(policy, { method, path, accept, userAgent });
  it('first match wins, by path prefix, method, Accept and User-Agent', () => {
    expect(p('GET', '/api/docs', NAV)).toBe('challenge');
    expect(p('POST', '/api/docs', NAV)).toBe('exempt');
    expect(p('GET', '/api/items?x=1', 'application/json')).toBe('exempt');
    expect(p('GET', '/app/home', NAV, 'MyShopApp/3.2 (Android)')).toBe('exempt');
    expect(p('GET', '/app/home', NAV, CHROME)).toBe('challenge'); // falls through to the default
    expect(p('GET', '/account/orders', 'application/json')).toBe('challenge');
    expect(p('GET', '/search?q=shoes', '*/*')).toBe('challenge');
    expect(p('GET', '/search', undefined)).toBe('challenge');
    expect(p('POST', '/search', undefined)).toBe('exempt');
    expect(p('GET', '/svc', 'application/grpc')).toBe('exempt');
    expect(p('GET', '/other', NAV)).toBe('challenge');
  });
  it('matches the path as the upstream will read it: one rule is not dodged by another spelling of its path', () => {
    // An upstream that merges slashes, decodes %-escapes of unreserved characters and resolves dot segments (nginx by
    // default, most frameworks) serves each of these as /private/data: each must meet the rule /private/ does.
    const q = compileChallengePolicy([{ path: '/private/', action: 'challenge' }, { path: '/api/', action: 'exempt' }]);
    const json = 'application/json';
    for (const path of ['/private/data', '//private/data', '/%70rivate/data', '/%70RIVATE/../private/data', '/x/../private/data', '/./private/data', '/private//data?x=1', '/x/%2e%2e/private/data', '/a/b/../../private/data']) {
      expect(challengeDecision(q, { method: 'GET', path, accept: json }), path).toBe('challenge');
    }
    // Exempt alike (the upstream serves /api/ there), and what is not the rule's path stays out of it.
    expect(challengeDecision(q, { method: 'GET', path: '//api/items', accept: NAV })).toBe('exempt');
    for (const path of ['/privatedata', '/private', '/%2fprivate/data', '/pri%76ate', '/..%2fprivate/x']) {
      expect(challengeDecision(q, { method: 'GET', path, accept: json }), path).toBe('exempt');
    }
  });
  it('matches the path without its query', () => {
    const q = compileChallengePolicy([{ path: '/a', action: 'exempt' }]);
    expect(challengeDecision(q, { method: 'GET', path: '/b?next=/a', accept: NAV })).toBe('challenge');
  });
});

describe('validation names the key', () => {
  const k = 'domains[0].challengePolicy';
  it('accepts a good policy and none', () => {
    expect(validateChallengePolicy(undefined, k)).toEqual([]);
    expect(validateChallengePolicy([{ path: '/api/', method: ['POST', 'GET'], accept: 'json', userAgent: '^App/', action: 'exempt' }, { action: 'challenge' }], k)).toEqual([]);
  });
  it('reports each problem with its key', () => {
    expect(validateChallengePolicy({}, k)).toEqual([`${k}: must be a list of rules`]);
    const probs = validateChallengePolicy([
      { path: '/api/', action: 'exempt' },
      { path: 'api', action: 'allow' },
      { method: 'POST', action: 'exempt' },
      { method: ['post'], accept: 'xml', action: 'exempt' },
      { userAgent: '(', action: 'exempt' },
      { path: '/x', colour: 'red', action: 'exempt' },
      'exempt',
    ], k);
    expect(probs).toContain(`${k}[1].action: must be "exempt" or "challenge"`);
    expect(probs).toContain(`${k}[1].path: must be a path prefix starting with "/" (no query, no spaces)`);
    expect(probs).toContain(`${k}[2].method: must be a non-empty list of methods, e.g. ["POST"]`);
    expect(probs).toContain(`${k}[3].method[0]: must be an HTTP method in upper case, e.g. "GET"`);
    expect(probs).toContain(`${k}[3].accept: must be "html", "json", "none" or a media type such as "application/grpc"`);
    expect(probs.some((p) => p.startsWith(`${k}[4].userAgent: not a valid regular expression`))).toBe(true);
    expect(probs).toContain(`${k}[5].colour: unknown key (known: path, method, accept, userAgent, action)`);
    expect(probs).toContain(`${k}[6]: must be an object with an action`);
    expect(probs.some((p) => p.startsWith(`${k}[0]`))).toBe(false);
  });
  it('warns about a catch-all rule that hides the rules after it', () => {
    expect(validateChallengePolicy([{ action: 'exempt' }, { path: '/a', action: 'challenge' }], k)).toEqual([`${k}[0]: has no condition, so it matches every request and the rules after it never apply`]);
  });
});

describe('refusal429', () => {
  it('answers JSON to a client that asked for JSON', () => {
    const r = refusal429('application/json', 7);
    expect(r.status).toBe(429);
    expect(r.headers['retry-after']).toBe('7');
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'too_many_requests', retryAfter: 7 });
    expect(r.headers['content-length']).toBe(String(Buffer.byteLength(r.body)));
    expect(r.headers['x-scrubber']).toBe('rate-limited');
    expect(refusal429('application/problem+json').headers['content-type']).toMatch(/json/);
  });
  it('answers text otherwise, never a page or a redirect', () => {
    for (const a of [undefined, '*/*', NAV, 'text/html, application/json']) {
      const r = refusal429(a, 2.2, 'over-share');
      expect(r.headers['content-type']).toMatch(/^text\/plain/);
      expect(r.headers['retry-after']).toBe('3');
      expect(r.headers.location).toBeUndefined();
      expect(r.headers['x-scrubber']).toBe('over-share');
      expect(r.body).toMatch(/429/);
    }
    expect(refusal429(undefined, 0).headers['retry-after']).toBe('1');
  });
});
