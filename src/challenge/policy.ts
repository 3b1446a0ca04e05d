// Which requests may be answered with the cookie challenge (a 302 to the same
// URL that sets a cookie), per domain. Pure: no I/O, no clock.
//
// A cookie round trip only makes sense for a browser navigation: a browser
// follows the 302, keeps the cookie and shows the page. A mobile app, a
// partner's script or a page's own fetch() gets a 302 it cannot use (or
// follows it without a cookie jar and loops), and is then banned for failing.
// So by default:
//   - challenged: GET and HEAD whose Accept lists text/html (or
//     application/xhtml+xml) with a non-zero q. Every browser sends such an
//     Accept on a navigation (top-level document and iframes);
//   - exempt: everything else — JSON APIs, XHR/fetch (Accept: application/json
//     or */*), POST/PUT/DELETE from apps, curl and most libraries (Accept: */*),
//     and a request with no Accept at all. A missing Accept is a script or a
//     library, never a browser navigation; a browser-like User-Agent does not
//     change that (it costs nothing to copy), so the UA plays no part by default.
// Exempt is not a way around the filter: such a request is judged by rate,
// cost and its share of the origin, and refused with 429 + Retry-After
// (refusal429) instead of a page or a redirect it cannot use.
//
// A domain may add rules (domains[].challengePolicy), tried in order; the first
// whose conditions all match decides, else the default above:
//   "challengePolicy": [
//     { "path": "/api/", "action": "exempt" },
//     { "path": "/app/", "userAgent": "^MyShopApp/", "action": "exempt" },
//     { "path": "/account/", "method": ["GET"], "accept": "json", "action": "challenge" },
//     { "path": "/feed.xml", "action": "exempt" }
//   ]
//   path       prefix of the path (without the query), starts with "/"
//   method     list of methods (upper case), any of which matches
//   accept     "html" (lists text/html), "json" (lists application/json or a
//              +json type), "none" (no Accept, or only */*), or a media type
//              such as "application/grpc" (listed in Accept)
//   userAgent  regular expression, case-insensitive, tried on User-Agent
//   action     "exempt" | "challenge"

import type { Answer } from '../respond/reply.ts';

export type ChallengeAction = 'challenge' | 'exempt';

export interface ChallengeRule {
  path?: string;
  method?: string[];
  accept?: string;
  userAgent?: string;
  action: ChallengeAction;
}

export interface ChallengeRequest {
  method: string;
  /** Path, with or without its query string. */
  path: string;
  accept?: string | null;
  userAgent?: string | null;
}

interface CompiledRule {
  path: string | null;
  methods: Set<string> | null;
  accept: ((accept: string) => boolean) | null;
  ua: RegExp | null;
  action: ChallengeAction;
}

export interface ChallengePolicy { readonly rules: readonly CompiledRule[] }

const MAX_RULES = 200;
const MAX_UA_REGEX = 300;
const METHOD = /^[A-Z][A-Z-]{0,19}$/;
const MEDIA_TYPE = /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+*-]+$/;

/** Media types listed in an Accept header with a q above zero, lower case, parameters dropped. */
export function acceptedTypes(accept: string | null | undefined): string[] {
  if (!accept) return [];
  const out: string[] = [];
  for (const part of accept.toLowerCase().split(',')) {
    const [type, ...params] = part.split(';').map((s) => s.trim());
    if (!type) continue;
    const q = params.find((p) => p.startsWith('q='));
    if (q !== undefined && !(Number(q.slice(2)) > 0)) continue;
    out.push(type);
  }
  return out;
}

export const acceptsHtml = (accept: string | null | undefined) => acceptedTypes(accept).some((t) => t === 'text/html' || t === 'application/xhtml+xml');
export const acceptsJson = (accept: string | null | undefined) => acceptedTypes(accept).some((t) => t === 'application/json' || t.endsWith('+json'));

/** The default, when no rule matches: only browser navigations (GET/HEAD accepting HTML) are challenged. */
export function defaultChallengeDecision(method: string, accept: string | null | undefined): ChallengeAction {
  const m = method.toUpperCase();
  return (m === 'GET' || m === 'HEAD') && acceptsHtml(accept) ? 'challenge' : 'exempt';
}

function acceptMatcher(spec: string): (accept: string) => boolean {
  const s = spec.toLowerCase();
  if (s === 'html') return acceptsHtml;
  if (s === 'json') return acceptsJson;
  if (s === 'none') return (a) => { const t = acceptedTypes(a); return t.length === 0 || t.every((x) => x === '*/*'); };
  return (a) => acceptedTypes(a).includes(s);
}

/** Compiles validated rules (see validateChallengePolicy); undefined or [] is the default policy alone. */
export function compileChallengePolicy(rules: readonly ChallengeRule[] | undefined): ChallengePolicy {
  return {
    rules: (rules ?? []).map((r) => ({
      path: r.path ?? null,
      methods: r.method?.length ? new Set(r.method.map((m) => m.toUpperCase())) : null,
      accept: r.accept ? acceptMatcher(r.accept) : null,
      ua: r.userAgent ? new RegExp(r.userAgent, 'i') : null,
      action: r.action,
    })),
  };
}

export const DEFAULT_CHALLENGE_POLICY: ChallengePolicy = compileChallengePolicy([]);

const UNRESERVED = /%(2[dDeE]|3\d|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])/g;

/**
 * The path as an upstream will read it, for the rules' prefixes: %-escapes of unreserved characters decoded, repeated
 * slashes merged, dot segments resolved (RFC 3986 §5.2.4) — what nginx does before it matches a location, and most
 * frameworks before routing. A rule on /private/ is otherwise dodged by //private/, /%70rivate/ or /x/../private/,
 * which the upstream serves as /private/. Reserved escapes (%2F) stay: the upstream keeps them apart from "/". The
 * common path has none of these and is returned as it is.
 */
function matchedPath(path: string): string {
  if (!path.includes('%') && !path.includes('//') && !path.includes('/.')) return path;
  const decoded = path.replace(UNRESERVED, (e) => String.fromCharCode(parseInt(e.slice(1), 16)));
  const out: string[] = [];
  const segs = decoded.split('/');
  for (let i = 1; i < segs.length; i++) {
    const seg = segs[i], last = i === segs.length - 1;
    if (seg === '..') { out.pop(); if (last) out.push(''); }
    else if (seg === '.' || (seg === '' && !last)) { if (last) out.push(''); }
    else out.push(seg);
  }
  return '/' + out.join('/');
}

/** 'challenge' when the request may get the cookie challenge, 'exempt' when it must be judged without one. */
export function challengeDecision(policy: ChallengePolicy, req: ChallengeRequest): ChallengeAction {
  const q = req.path.indexOf('?');
  const path = matchedPath(q < 0 ? req.path : req.path.slice(0, q));
  const method = req.method.toUpperCase();
  const accept = req.accept ?? '';
  for (const r of policy.rules) {
    if (r.path !== null && !path.startsWith(r.path)) continue;
    if (r.methods !== null && !r.methods.has(method)) continue;
    if (r.accept !== null && !r.accept(accept)) continue;
    if (r.ua !== null && !r.ua.test(req.userAgent ?? '')) continue;
    return r.action;
  }
  return defaultChallengeDecision(method, accept);
}

/**
 * Problems with a domain's challengePolicy value, each naming its key, e.g.
 * `domains[0].challengePolicy[1].action: must be "exempt" or "challenge"`. [] when valid.
 * @param key where the value sits, e.g. "domains[0].challengePolicy"
 */
export function validateChallengePolicy(value: unknown, key: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) return [`${key}: must be a list of rules`];
  if (value.length > MAX_RULES) return [`${key}: at most ${MAX_RULES} rules`];
  const problems: string[] = [];
  value.forEach((rule: unknown, i) => {
    const k = `${key}[${i}]`;
    if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) { problems.push(`${k}: must be an object with an action`); return; }
    const r = rule as Record<string, unknown>;
    for (const name of Object.keys(r)) if (!['path', 'method', 'accept', 'userAgent', 'action'].includes(name)) problems.push(`${k}.${name}: unknown key (known: path, method, accept, userAgent, action)`);
    if (r.action !== 'exempt' && r.action !== 'challenge') problems.push(`${k}.action: must be "exempt" or "challenge"`);
    if (r.path !== undefined && (typeof r.path !== 'string' || !r.path.startsWith('/') || /[\s?#]/.test(r.path))) problems.push(`${k}.path: must be a path prefix starting with "/" (no query, no spaces)`);
    if (r.method !== undefined) {
      if (!Array.isArray(r.method) || r.method.length === 0) problems.push(`${k}.method: must be a non-empty list of methods, e.g. ["POST"]`);
      else r.method.forEach((m: unknown, j) => { if (typeof m !== 'string' || !METHOD.test(m)) problems.push(`${k}.method[${j}]: must be an HTTP method in upper case, e.g. "GET"`); });
    }
    if (r.accept !== undefined && (typeof r.accept !== 'string' || !(['html', 'json', 'none'].includes(r.accept) || MEDIA_TYPE.test(r.accept.toLowerCase())))) problems.push(`${k}.accept: must be "html", "json", "none" or a media type such as "application/grpc"`);
    if (r.userAgent !== undefined) {
      if (typeof r.userAgent !== 'string' || r.userAgent.length === 0 || r.userAgent.length > MAX_UA_REGEX) problems.push(`${k}.userAgent: must be a regular expression of 1 to ${MAX_UA_REGEX} characters`);
      else { try { new RegExp(r.userAgent, 'i'); } catch (e) { problems.push(`${k}.userAgent: not a valid regular expression (${(e as Error).message})`); } }
    }
    if (r.path === undefined && r.method === undefined && r.accept === undefined && r.userAgent === undefined && problems.length === 0 && i < value.length - 1) problems.push(`${k}: has no condition, so it matches every request and the rules after it never apply`);
  });
  return problems;
}

/** Each domain's compiled policy, made once per domain config object (a reload brings new objects). */
export class DomainPolicies {
  private readonly compiled = new WeakMap<object, ChallengePolicy>();

  /** Whether the request may get the cookie challenge under its domain's policy. */
  challengeable(domain: { challengePolicy?: readonly ChallengeRule[] }, head: { method: string; url: string; headers: { accept?: string; 'user-agent'?: string } }): boolean {
    let policy = this.compiled.get(domain);
    if (!policy) { policy = compileChallengePolicy(domain.challengePolicy); this.compiled.set(domain, policy); }
    return challengeDecision(policy, { method: head.method, path: head.url, accept: head.headers.accept, userAgent: head.headers['user-agent'] }) === 'challenge';
  }
}

export interface Refusal { status: 429; headers: Record<string, string>; body: string }

/**
 * The answer to a request that must be refused but cannot use a page or a redirect
 * (exempt from the challenge): 429 with Retry-After, JSON when the client asked for JSON.
 * The X-Scrubber header tells it from the application's own 429.
 */
export function refusal429(accept: string | null | undefined, retryAfterS = 10, reason = 'rate-limited'): Refusal {
  const retry = String(Math.max(1, Math.ceil(retryAfterS)));
  const json = acceptsJson(accept) && !acceptsHtml(accept);
  const body = json
    ? JSON.stringify({ error: 'too_many_requests', message: 'Too many requests; retry later.', retryAfter: Number(retry) }) + '\n'
    : `429 Too Many Requests: retry after ${retry} s.\n`;
  return {
    status: 429,
    headers: {
      'content-type': json ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'retry-after': retry,
      'cache-control': 'no-store',
      'x-scrubber': reason,
    },
    body,
  };
}

/** refusal429 as an answer of the proxy (X-Scrubber: reason), closing the connection when asked (a banned source's). */
export function exemptRefusal(accept: string | null | undefined, retryAfterS: number, reason: 'rate-limited' | 'overloaded' | 'queue-timeout' | 'queue-full' | 'newcomer-share' = 'rate-limited', close = true): Answer {
  const r = refusal429(accept, retryAfterS, reason);
  const { 'x-scrubber': _x, 'content-length': _l, ...headers } = r.headers; // the reply writes these two itself
  return { status: 429, reason, headers, body: r.body, close };
}
