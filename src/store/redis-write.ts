// Writing a batch of decisions to Redis: the later decision stands. Each
// decision carries when it was made (decisions/bus.ts); Redis holds, for every
// address and domain, the time of the decision in force (a ban's or whitelist
// entry's `since`, an attack state's `at`) or of its lifting (<p>gone). One
// script compares and writes the whole batch, so no other node's write comes in
// between, and publishes only what it wrote: a node back from a cut with an
// unban made before another node's newer ban neither lifts that ban in Redis
// nor on any node. What it refused as older is reported (`stale`): the writer
// reads back what is in force instead (RedisBus resyncs).
import type { Decision } from '../decisions/bus.ts';
import { decidedAt } from '../decisions/bus.ts';
import { attackJson, type RedisKeys } from './redis-keys.ts';

/**
 * KEYS: bans hash, bans:exp zset, whitelist hash, attack hash, gone zset.
 * ARGV: the node id as a JSON string, the channel, then six per decision: kind, address or domain, when ('' when
 * the decision does not say: written as it comes), the value to store, the ban's expiry score, the decision as JSON
 * (for the message).
 * Returns { indices of decisions older than what is in force, indices of decisions Redis refused (a key of the
 * wrong type, or a command that failed: the others are written) }.
 */
export const WRITE_LUA = `
local function failed(r) return type(r) == 'table' and r.err ~= nil end
-- The time of a stored entry (flat JSON written by a node; a quote inside a string is escaped, so these patterns
-- only meet the keys): its "at" if it has one, else its "since". No JSON decoding: it could fail on a note.
local function timeOf(v)
  if not v then return nil end
  return tonumber(string.match(v, '"at":(%-?%d+)')) or tonumber(string.match(v, '"since":(%-?%d+)'))
end
-- A key of the wrong type (a person or another program wrote there) refuses every decision that uses it, before
-- anything of that decision is written.
local usable = {}
for i = 1, 5 do
  local t = redis.call('TYPE', KEYS[i]).ok
  usable[i] = t == 'none' or t == ((i == 2 or i == 5) and 'zset' or 'hash')
end
local uses = { ban = { 1, 2, 5 }, unban = { 1, 2, 5 }, whitelist = { 3, 5 }, unwhitelist = { 3, 5 }, attack = { 4 } }
local pub, stale, refused = {}, {}, {}
local n = (#ARGV - 2) / 6
for i = 0, n - 1 do
  local b = 3 + i * 6
  local kind, id, t, val, score, msg = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local hash, gone
  if kind == 'ban' or kind == 'unban' then hash = KEYS[1]; gone = 'b:' .. id
  elseif kind == 'whitelist' or kind == 'unwhitelist' then hash = KEYS[3]; gone = 'w:' .. id
  else hash = KEYS[4]; gone = nil end
  local bad = false
  for _, k in ipairs(uses[kind] or {}) do if not usable[k] then bad = true end end
  -- After a failed command nothing more of this decision is written: what grows memory (refused when Redis is out of
  -- it) goes first, so a refused unban leaves the ban whole rather than deleted without its lifting recorded.
  local function call(...)
    if bad then return nil end
    local r = redis.pcall(...)
    if failed(r) then bad = true; return nil end
    return r
  end
  -- The time of what is in force: the stored decision's, or its lifting's, whichever is later.
  local cur = nil
  if not bad then
    cur = timeOf(call('HGET', hash, id))
    if gone then
      local g = call('ZSCORE', KEYS[5], gone)
      if g and (not cur or tonumber(g) > cur) then cur = tonumber(g) end
    end
  end
  if bad then refused[#refused + 1] = i
  elseif t ~= '' and cur and tonumber(t) < cur then stale[#stale + 1] = i
  else
    if kind == 'ban' then call('HSET', hash, id, val); call('ZADD', KEYS[2], score, id); call('ZREM', KEYS[5], gone)
    elseif kind == 'unban' then
      if t ~= '' then call('ZADD', KEYS[5], t, gone) end
      call('HDEL', hash, id); call('ZREM', KEYS[2], id)
    elseif kind == 'whitelist' then call('HSET', hash, id, val); call('ZREM', KEYS[5], gone)
    elseif kind == 'unwhitelist' then
      if t ~= '' then call('ZADD', KEYS[5], t, gone) end
      call('HDEL', hash, id)
    else call('HSET', hash, id, val) end
    if bad then refused[#refused + 1] = i else pub[#pub + 1] = msg end
  end
end
if #pub > 0 then redis.call('PUBLISH', ARGV[2], '{"node":' .. ARGV[1] .. ',"ds":[' .. table.concat(pub, ',') .. ']}') end
return { stale, refused }`;

// A ban without end (Infinity) is scored +inf, so pruning never reaches it.
const score = (expiresAt: number): string => (Number.isFinite(expiresAt) ? String(expiresAt) : '+inf');

/** The KEYS of WRITE_LUA. */
export const writeKeys = (k: RedisKeys): string[] => [k.bans, k.exp, k.wl, k.attack, k.gone];

/** WRITE_LUA's ARGV for a batch, and the decisions in it (bans that expired while queued are left out). Pure. */
export function writeArgs(k: RedisKeys, nodeId: string, batch: Decision[], now: number): { args: string[]; ds: Decision[] } {
  const args = [JSON.stringify(nodeId), k.channel];
  const ds: Decision[] = [];
  for (const d of batch) {
    if (d.kind === 'ban' && d.entry.expiresAt <= now) continue; // expired while queued
    const t = decidedAt(d);
    const when = t === null ? '' : String(t);
    switch (d.kind) {
      case 'ban': args.push('ban', d.entry.ip, when, JSON.stringify(d.entry), score(d.entry.expiresAt)); break;
      case 'unban': args.push('unban', d.ip, when, '', ''); break;
      case 'whitelist': args.push('whitelist', d.entry.ip, when, JSON.stringify(d.entry), ''); break;
      case 'unwhitelist': args.push('unwhitelist', d.ip, when, '', ''); break;
      case 'attack': args.push('attack', d.domain, when, attackJson(d), ''); break;
    }
    args.push(JSON.stringify(d));
    ds.push(d);
  }
  return { args, ds };
}

/** WRITE_LUA's reply as the decisions it names. Pure. */
export function writeOutcome(ds: Decision[], reply: unknown): { stale: Set<Decision>; refused: Set<Decision> } {
  const [stale, refused] = (Array.isArray(reply) ? reply : [[], []]) as [unknown, unknown];
  const of = (xs: unknown) => new Set((Array.isArray(xs) ? xs : []).map((i) => ds[Number(i)]).filter((d) => d !== undefined));
  return { stale: of(stale), refused: of(refused) };
}
