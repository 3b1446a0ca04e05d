// Admin endpoints for the lists (SPEC.md §10). Bad input gets 400 and changes
// nothing: every check runs before the first write.
import type http from 'node:http';
import { setImmediate as turn } from 'node:timers/promises';
import { HttpError, sendJson, type AdminServer } from './server.ts';
import { MAX_BAN_SECONDS } from '../decisions/ban-time.ts';
import { parseBlacklistAddress, parseWhitelistEntry } from '../decisions/lists.ts';
import type { BanEntry } from '../decisions/blacklist.ts';

/** Characters as a person counts them (code points): .length counts an emoji twice. */
const chars = (s: string): number => { let n = 0; for (const _ of s) n++; return n; };
import type { Filter } from '../detect/filter.ts';

// A ban without end (one found so in Redis, or given the longest time) has no date: null, not a 500 for the listing.
const iso = (ms: number) => (Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : null);
const banJson = (e: BanEntry) => ({ ip: e.ip, reason: e.reason, rule: e.rule, since: iso(e.since), expiresAt: iso(e.expiresAt) });

function source(param: string): string {
  const p = parseBlacklistAddress(param);
  if (!p.ok) throw new HttpError(400, p.error);
  return p.value;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A config entry is the config's: overwritten through the API it would turn into an API entry, which DELETE then removes. */
function notFromConfig(f: Filter, text: string): void {
  if (f.whitelistEntry(text)?.origin === 'config') throw new HttpError(400, `${text} comes from filter.whitelist in the config; change it there`);
}

/** Entries serialised per turn of the event loop in a long listing: a blacklist at filter.maxBans (500,000) is some
 *  74 MB of JSON and two seconds of the thread that accepts every connection; in steps it keeps accepting between them. */
const LIST_STEP = 2000;
const MAX_LIST = 10_000_000;

/** `limit`, `offset`, `order` of GET /api/blacklist; a malformed one is a 400 naming it. */
function listQuery(url: URL): { limit: number; offset: number; newest: boolean } {
  const num = (name: string, min: number, fallback: number): number => {
    const v = url.searchParams.get(name);
    if (v === null) return fallback;
    if (!/^\d{1,8}$/.test(v) || Number(v) < min || Number(v) > MAX_LIST) throw new HttpError(400, `${name}: must be a whole number from ${min} to ${MAX_LIST}`);
    return Number(v);
  };
  const order = url.searchParams.get('order') ?? 'oldest';
  if (order !== 'oldest' && order !== 'newest') throw new HttpError(400, `order: must be "oldest" or "newest"`);
  return { limit: num('limit', 1, MAX_LIST), offset: num('offset', 0, 0), newest: order === 'newest' };
}

/** Writes {"total", "entries"} in steps, a turn of the event loop (and the client's drain) between them. */
async function sendListing(res: http.ServerResponse, total: number, entries: BanEntry[]): Promise<void> {
  if (entries.length <= LIST_STEP) return sendJson(res, 200, { total, entries: entries.map(banJson) });
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  if (res.req.method === 'HEAD') { res.end(); return; }
  res.write(`{"total":${total},"entries":[`);
  for (let i = 0; i < entries.length; i += LIST_STEP) {
    let part = i ? ',' : '';
    for (let j = i; j < Math.min(i + LIST_STEP, entries.length); j++) part += (j > i ? ',' : '') + JSON.stringify(banJson(entries[j]));
    const room = res.write(part);
    if (res.destroyed) return;
    if (room) await turn();
    else await new Promise<void>((r) => { const go = () => { res.off('drain', go); res.off('close', go); r(); }; res.on('drain', go); res.on('close', go); });
    if (res.destroyed) return;
  }
  res.end(']}');
}

export function registerFilterRoutes(admin: AdminServer, f: Filter): void {
  admin.route('GET', '/api/blacklist', async ({ url, res }) => {
    const q = listQuery(url);
    // Oldest first by when each ban began; the map keeps them nearly so (insertion order), which the sort runs through.
    const all = f.bans().sort((a, b) => a.since - b.since);
    if (q.newest) all.reverse();
    await sendListing(res, all.length, all.slice(q.offset, q.offset + q.limit));
  });

  admin.route('GET', '/api/blacklist/:ip', ({ params }) => {
    const ip = source(params.ip);
    const e = f.banOf(ip);
    return e ? { ...banJson(e), listed: true } : { ip, listed: false };
  });

  admin.route('PUT', '/api/blacklist/:ip', async (r) => {
    const ip = source(r.params.ip);
    const body = await r.json();
    if (body !== null && !isObj(body)) throw new HttpError(400, 'body must be a JSON object {"ttlSeconds", "reason"}');
    const b = body ?? {};
    for (const k of Object.keys(b)) if (k !== 'ttlSeconds' && k !== 'reason') throw new HttpError(400, `unknown field ${JSON.stringify(k)}`);
    const ttl = b.ttlSeconds ?? 3600;
    if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_BAN_SECONDS) throw new HttpError(400, `ttlSeconds must be an integer from 1 to ${MAX_BAN_SECONDS}`);
    const reason = b.reason ?? 'manual';
    if (typeof reason !== 'string' || chars(reason) > 500) throw new HttpError(400, 'reason must be a string of at most 500 characters');
    if (f.isWhitelistedSource(ip)) throw new HttpError(400, `${ip} is whitelisted; remove it from the whitelist first`);
    const e = f.manualBan(ip, ttl, reason);
    // A blacklist full of longer manual bans (filter.maxBans) lifts this one at once: it is said so.
    return { ...banJson(e), listed: f.banOf(ip) === e };
  });

  admin.route('DELETE', '/api/blacklist/:ip', ({ params }) => {
    const ip = source(params.ip);
    return { ip, removed: f.unban(ip), listed: false };
  });

  admin.route('GET', '/api/whitelist', () => ({ entries: f.whitelistEntries().map((e) => ({ ...e, since: iso(e.since) })) }));

  admin.route('PUT', '/api/whitelist/:entry', async (r) => {
    const p = parseWhitelistEntry(r.params.entry);
    if (!p.ok) throw new HttpError(400, p.error);
    notFromConfig(f, p.value.text);
    const body = await r.json();
    if (body !== null && !isObj(body)) throw new HttpError(400, 'body must be empty or a JSON object {"note"}');
    for (const k of Object.keys(body ?? {})) if (k !== 'note') throw new HttpError(400, `unknown field ${JSON.stringify(k)}`);
    const note = body?.note ?? '';
    if (typeof note !== 'string' || chars(note) > 500) throw new HttpError(400, 'note must be a string of at most 500 characters');
    const e = f.addWhitelist(p.value, note);
    return { ...e, since: iso(e.since) };
  });

  admin.route('DELETE', '/api/whitelist/:entry', ({ params }) => {
    const p = parseWhitelistEntry(params.entry);
    if (!p.ok) throw new HttpError(400, p.error);
    notFromConfig(f, p.value.text);
    return { ip: p.value.text, removed: f.removeWhitelist(p.value.text) };
  });
}
