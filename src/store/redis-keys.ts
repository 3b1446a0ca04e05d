// How decisions are laid out in Redis, and how they are read back (the write script: redis-write.ts).
// Kept apart from RedisBus (connection state, queueing, resync) so that the
// on-Redis format is in one place: two nodes of different versions must agree
// on it, and a change here is a change to what every node reads.
//
// Key layout (prefix defaults to "scrubber:"):
//   <p>bans        hash    ip → JSON BanEntry
//   <p>bans:exp    zset    ip scored by expiresAt (pruning the hash)
//   <p>whitelist   hash    ip → JSON WhitelistEntry
//   <p>attack      hash    domain → JSON { under, since, reason, at, failing? }
//   <p>gone        zset    "b:<ip>" / "w:<ip>" scored by when that ban / whitelist entry was lifted (a ban that
//                          ran out: when it was made): an older decision arriving later (a node back from a cut)
//                          does not bring it back; kept 7 days
//   <p>secret      string  the challenge secret (SET NX: the first node wins)
//   <p>tls-ticket:<n> string the TLS session ticket key of period n (SET NX, expires
//                          after two periods: listen/ticket-keys.ts)
//   <p>epoch       string  a random id set NX; a bus that finds it changed knows
//                          Redis lost its data (restarted without persistence)
//                          and writes back everything it knows
//   <p>decisions   channel JSON { node, ds: Decision[] }, a node ignores its own ("@db<n>" appended past database 0)
//   <p>token:<id>, <p>tokens  a challenge token's networks and its revocation: redis-tokens.ts (not the bus's)
//
// This file imports nothing from the other redis-* files (they import it).
import type { BanEntry } from '../decisions/blacklist.ts';
import type { WhitelistEntry } from '../decisions/lists.ts';
import type { Decision, DecisionSnapshot } from '../decisions/bus.ts';
import type { Redis } from 'ioredis';

export interface AttackState { domain: string; under: boolean; since: number; reason: string | null; at?: number; failing?: boolean }

/** The snapshot a RedisBus returns: DecisionSnapshot plus the attack state of every domain. */
export interface RedisSnapshot extends DecisionSnapshot {
  attacks: AttackState[];
  /** Parts Redis could not give (a key of the wrong type): unknown, not empty. */
  unreadable?: ('bans' | 'whitelist' | 'attacks')[];
}

export interface RedisKeys { bans: string; exp: string; wl: string; attack: string; gone: string; secret: string; epoch: string; channel: string; ticket: string }

export const redisKeys = (p: string, url = ''): RedisKeys =>
  ({ bans: `${p}bans`, exp: `${p}bans:exp`, wl: `${p}whitelist`, attack: `${p}attack`, gone: `${p}gone`, secret: `${p}secret`, epoch: `${p}epoch`, channel: channelName(p, 'decisions', url), ticket: `${p}tls-ticket:` });

/** A pub/sub channel of the cluster. Keys live in the URL's database, channels are global to the server: a channel
 *  names its database (past 0, which keeps the name every node used so far), or clusters on two databases of one
 *  server would take each other's bans and whitelist. */
export function channelName(prefix: string, name: string, url: string): string {
  let db = 0;
  // As ioredis reads it: the path (/2), else the query (?db=2).
  try { const u = new URL(url), path = u.pathname.slice(1), q = u.searchParams.get('db') ?? ''; db = Number(/^\d+$/.test(path) ? path : /^\d+$/.test(q) ? q : 0); } catch { /* checked by the config */ }
  return db === 0 ? `${prefix}${name}` : `${prefix}${name}@db${db}`;
}

/** The value every node uses at `key`: `mine` is written first where there is none (the first node wins; with an
 *  expiry, ms, when given). */
export async function sharedValue(cmd: Redis, key: string, mine: Buffer, ttlMs?: number): Promise<Buffer> {
  // Read first: the ticket key is asked every few seconds, and is there nearly always (one round trip, no write).
  const had = await cmd.getBuffer(key);
  if (had && had.length) return had;
  if (ttlMs) await cmd.set(key, mine, 'PX', ttlMs, 'NX');
  else await cmd.set(key, mine, 'NX');
  const v = await cmd.getBuffer(key);
  return v && v.length ? v : mine;
}

/** How long a lifted ban or whitelist entry is remembered as lifted (<p>gone): a node cut off for longer than this
 *  may bring back, when it returns, a decision of its own older than the lifting. */
export const GONE_KEPT_MS = 7 * 24 * 3600_000;
/** And at most this many of them, the latest: a week of a large botnet's bans running out would otherwise leave a
 *  marker per address (about 100 bytes each in Redis); past it, the oldest liftings are forgotten first. */
export const GONE_MAX = 1_000_000;

/** Deletes expired bans from the hash and the zset, in bounded steps (one call never holds Redis long), and what
 *  was lifted longer ago than GONE_KEPT_MS or is past the GONE_MAX latest. KEYS: bans hash, bans:exp zset, gone zset;
 *  ARGV: now (ms), the oldest lifting kept (ms), how many liftings are kept at most. */
export const PRUNE_LUA = `
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
local n = 0
for i = 1, 50 do
  local ips = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 500)
  if #ips == 0 then break end
  -- Remembered as lifted when the ban that ran out was made: an older ban arriving later (from a node back from a
  -- cut) does not come back.
  for _, ip in ipairs(ips) do
    local v = redis.call('HGET', KEYS[1], ip)
    local s = v and tonumber(string.match(v, '"since":(%-?%d+)'))
    local g = s and tonumber(redis.call('ZSCORE', KEYS[3], 'b:' .. ip))
    if s and (not g or g < s) then redis.call('ZADD', KEYS[3], s, 'b:' .. ip) end
  end
  redis.call('HDEL', KEYS[1], unpack(ips))
  redis.call('ZREM', KEYS[2], unpack(ips))
  n = n + #ips
end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[3]) + 1))
return n`;

/** The slot a decision takes in the pending queue: a later decision on the same ban / whitelist entry / domain
 *  replaces an earlier one (only the newest needs writing). */
export const pendingKey = (d: Decision): string => {
  switch (d.kind) {
    case 'ban': return `b:${d.entry.ip}`;
    case 'unban': return `b:${d.ip}`;
    case 'whitelist': return `w:${d.entry.ip}`;
    case 'unwhitelist': return `w:${d.ip}`;
    case 'attack': return `a:${d.domain}`;
  }
};

/** Decisions not yet written, one per pendingKey; Map order is oldest first. Each carries a sequence number so
 *  that a flush removes only what it wrote, not a newer decision on the same key queued while it was writing. */
export class PendingWrites {
  private readonly m = new Map<string, { d: Decision; seq: number }>();
  private seq = 0;
  private readonly max: number;
  constructor(max: number) { this.max = max; }

  get size(): number { return this.m.size; }

  /** Queues d; an older decision on its key is replaced (and d goes last). Returns the oldest decision when the
   *  queue was full and it was dropped, else null. */
  put(d: Decision): Decision | null {
    const key = pendingKey(d);
    this.m.delete(key); // newest of a key goes last
    this.m.set(key, { d, seq: ++this.seq });
    if (this.m.size <= this.max) return null;
    const [oldest, e] = this.m.entries().next().value as [string, { d: Decision }];
    this.m.delete(oldest);
    return e.d;
  }

  /** Every queued decision, oldest first. */
  all(): Decision[] { return [...this.m.values()].map((e) => e.d); }

  /** The decision queued on this key (pendingKey), if any. */
  get(key: string): Decision | undefined { return this.m.get(key)?.d; }

  /** Whether a decision on this key (pendingKey) waits to be written. */
  has(key: string): boolean { return this.m.has(key); }

  /** Queues d unless a decision on its key is already queued (that one is newer). */
  putIfAbsent(d: Decision): void {
    const key = pendingKey(d);
    if (!this.m.has(key)) this.m.set(key, { d, seq: ++this.seq });
  }

  /** The oldest n, as [key, seq, decision]; they stay queued until done(). */
  take(n: number): [string, number, Decision][] {
    const batch: [string, number, Decision][] = [];
    for (const [key, { d, seq }] of this.m) {
      batch.push([key, seq, d]);
      if (batch.length >= n) break;
    }
    return batch;
  }

  /** What take() returned was written: remove it, except where a newer decision replaced it meanwhile. */
  done(batch: [string, number, Decision][]): void {
    for (const [key, seq] of batch) if (this.m.get(key)?.seq === seq) this.m.delete(key);
  }
}

/** A message from the channel, or null when it is not one (the sender's node id is checked by the caller). */
export function parseMessage(msg: string): { node: string; ds: Decision[] } | null {
  const m = parse<{ node: unknown; ds: unknown }>(msg);
  if (!m || typeof m !== 'object' || !Array.isArray(m.ds)) return null;
  // Anything else on the channel (another version, a hand-typed PUBLISH) is left out, never applied half-way.
  return { node: String(m.node), ds: decisionsOf(m.ds) };
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;
// Absent: a decision of a version that did not say when it was made.
const isTime = (x: unknown): boolean => x === undefined || (typeof x === 'number' && Number.isFinite(x));
// null or absent: a ban without end (JSON has no Infinity).
const isNum = (x: unknown): boolean => typeof x === 'number' || x === null || x === undefined;
// A free text a node writes as a string; absent or null from a hand-written key or another version.
const isText = (x: unknown): boolean => typeof x === 'string' || x === null || x === undefined;

/** A ban entry as a node writes it (an expiry of null is one without end). */
export function isBanEntry(e: unknown): e is BanEntry {
  return isObj(e) && typeof e.ip === 'string' && typeof e.reason === 'string' && typeof e.rule === 'string' && Number.isFinite(e.since) && isNum(e.expiresAt);
}
/** A whitelist entry; its note may be missing (read as empty: decisions.ts), anything else in it is not one. */
const isWlEntry = (e: unknown): e is WhitelistEntry => isObj(e) && typeof e.ip === 'string' && Number.isFinite(e.since) && isText(e.note);

/** The decisions among parsed JSON values (a ban without end comes back from JSON with a null expiry). */
export function decisionsOf(xs: unknown[]): Decision[] {
  const ds = xs.filter(isDecision);
  for (const d of ds) if (d.kind === 'ban' && d.entry.expiresAt == null) d.entry.expiresAt = Infinity;
  return ds;
}

/** A decision as a node publishes it. */
export function isDecision(d: unknown): d is Decision {
  if (!isObj(d)) return false;
  switch (d.kind) {
    case 'ban': return isBanEntry(d.entry);
    case 'whitelist': return isWlEntry(d.entry);
    case 'unban': case 'unwhitelist': return typeof d.ip === 'string' && isTime(d.at);
    case 'attack': return typeof d.domain === 'string' && typeof d.under === 'boolean' && Number.isFinite(d.since) && isText(d.reason) && isTime(d.at);
    default: return false;
  }
}

/** The three hashes as HGETALL returns them, turned into a snapshot. Entries that do not parse are skipped
 *  (one bad value must not hide the rest); a ban stored without expiresAt (JSON has no Infinity) never ends. */
export function parseState(bans: Record<string, string>, wl: Record<string, string>, attack: Record<string, string>, now: number): RedisSnapshot {
  const out: RedisSnapshot = { bans: [], whitelist: [], attacks: [] };
  for (const v of Object.values(bans)) {
    const e = parse<unknown>(v);
    if (isBanEntry(e) && (e.expiresAt ?? Infinity) > now) { if (e.expiresAt == null) e.expiresAt = Infinity; out.bans.push(e); }
  }
  for (const v of Object.values(wl)) { const e = parse<unknown>(v); if (isWlEntry(e)) out.whitelist.push(e); }
  for (const [domain, v] of Object.entries(attack)) {
    const a = parse<{ under: boolean; since: number; reason: unknown; at?: number; failing?: boolean }>(v);
    // A reason that is no text (another version's structured one) is no reason here; a state with no time is none.
    if (isObj(a) && Number.isFinite(a.since)) out.attacks.push({ domain, under: !!a.under, since: a.since, reason: typeof a.reason === 'string' ? a.reason : null, ...(typeof a.at === 'number' ? { at: a.at } : {}), ...(a.failing === true ? { failing: true } : {}) });
  }
  return out;
}

/** A domain's attack state as stored in <p>attack; also the form in which a node remembers it (compared as a string). */
export const attackJson = (d: Extract<Decision, { kind: 'attack' }>): string => JSON.stringify({ under: d.under, since: d.since, reason: d.reason, at: d.at, ...(d.failing ? { failing: true } : {}) });

export function parse<T>(s: string): T | null {
  try { return JSON.parse(s) as T; } catch { return null; }
}

export interface BusLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface RedisBusOptions {
  /** redis://host:port/db */
  url: string;
  /** Key and channel prefix; default "scrubber:". */
  prefix?: string;
  /** This node's id (decisions it published come back on the channel and are ignored); default host:pid:random. */
  nodeId?: string;
  logger?: BusLogger;
  /** Most decisions kept while Redis is out of reach; default 100 000 (the oldest are dropped beyond). */
  maxPending?: number;
  /** How long snapshot() and secret() wait for a connection before answering from what this node knows; default 2000 ms. */
  waitMs?: number;
  /** Heartbeat period; default 1000 ms. */
  heartbeatMs?: number;
  /** A heartbeat PING not answered within this marks the bus unhealthy and reconnects; default 1500 ms. */
  heartbeatTimeoutMs?: number;
  /** Where the queue of decisions not yet written is kept while Redis is away (the node's own store), so that a
   *  node restarted before Redis returns still tells the others what it decided. */
  queue?: { load(): Decision[]; save(ds: Decision[]): void };
  /** Where the Redis epoch this node last reconciled with is kept (the node's own store): a node that restarts
   *  after Redis lost its data writes back what it holds, and one whose Redis kept it lifts what others lifted. */
  epoch?: { load(): string | null; save(e: string): void };
  /** Called with the shared challenge secret each time this node takes it up: kept in the node's store, so that a
   *  restart while Redis is away signs with the one the visitors' cookies carry. */
  keepSecret?: (s: Buffer) => void;
  /** The clock the offset to Redis's is measured with (redis-clock.ts); default Date.now. */
  clock?: () => number;
}
