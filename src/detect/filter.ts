// Filtering (SPEC.md §6): attributes traffic to sources, turns it into events
// for the detector rules, bans sources whose buckets overflow or whose
// combined score crosses the line, challenges untrusted sources of a domain
// under attack, and keeps the lists. This module sequences the parts; the
// decisions themselves are pure functions in engine.ts, score.ts, decide.ts,
// attack-mode.ts and challenge.ts.
import type net from 'node:net';
import { createSecretKey, type KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.ts';
import type { Db } from '../store/db.ts';
import type { Logger } from '../log.ts';
import type { AdminServer } from '../admin/server.ts';
import type { FilterHooks, Observation, RequestContext } from '../observe/observation.ts';
import { compileRules, EVENT_INDEX as E, type CompiledRules } from './rules.ts';
import { applyEvents, fills, newPending, newVerdict } from './engine.ts';
import { explainOverflow, explainScore, scoreLine } from './score.ts';
import { banDurationMs, decayedOffences, enforced, recordOffence, type OffenderRecord } from '../decisions/ban-time.ts';
import { BodySizes } from './body-sizes.ts';
import { cookieValue, hashRange, hashString, headerOddness, isAssetPath, isHtml, isStaticType, pathEnd, queryKeysHash } from './signals.ts';
import { LruSourceStore, type SourceState, type SourceStore } from './sources.ts';
import { Blacklist, type BanEntry } from '../decisions/blacklist.ts';
import { parseWhitelistEntry, Whitelist, type ParsedRange } from '../decisions/lists.ts';
import { sendChallenge, signToken, verifyToken } from '../challenge/cookie.ts';
import { DomainTraffic, stepAttack, saveAttack, restoreAttack, newAttackState, type AttackState } from './attack-mode.ts';
import { SqliteFilterStore, type FilterStore, type LearnedDomain } from '../store/filter-store.ts';
import { registerFilterRoutes } from '../admin/routes-lists.ts';

export interface FilterDeps {
  db: Db;
  log: Logger;
  /** Destroys every open client connection of a source (a new ban takes effect at once). */
  closeSource(source: string): void;
  /** Installs a new BlockList on every listener (net.BlockList cannot remove entries, so unbans swap the list). */
  setBlockList(list: import('node:net').BlockList): void;
}

/** What statistics and the dashboard read from the filter. */
export interface FilterSnapshot {
  blacklistSize: number;
  /** Domains currently in attack mode. */
  underAttack: string[];
  /** Monotonic counters (connections dropped at accept, challenges sent, bans by rule, ...). */
  counters: Record<string, number>;
}

export interface Filter extends FilterHooks {
  reconfigure(config: Config): void;
  registerRoutes(admin: AdminServer): void;
  snapshot(): FilterSnapshot;
  /** A domain's attack mode and learned baseline (undefined until it has seen traffic). */
  attackState(domain: string): Readonly<AttackState> | undefined;
  close(): Promise<void>;
}

export function createFilter(config: Config, deps: FilterDeps, store?: FilterStore): Filter {
  return new ScrubberFilter(config, deps, store ?? new SqliteFilterStore(deps.db));
}

/** Client errors that mean "too slow" (slowloris) and those that mean "not HTTP"; the rest (resets) are ordinary. */
const SLOW_CODES = new Set(['HPE_HEADERS_TIMEOUT', 'ERR_HTTP_REQUEST_TIMEOUT']);

const TICK_MS = 250;
const STATIC_PATHS_PER_DOMAIN = 4096;
/** How often what was learned of each domain's traffic is saved (and on close): a crash loses at most this much learning. */
const LEARNED_SAVE_MS = 60_000;

export class ScrubberFilter implements Filter {
  private cfg: Config['filter'];
  private rules: CompiledRules;
  private rulesKey: string;
  private sources: SourceStore;
  private readonly blacklist: Blacklist;
  private readonly whitelist = new Whitelist();
  private readonly store: FilterStore;
  private readonly deps: FilterDeps;
  private readonly offenders: LRUCache<string, OffenderRecord>;
  private readonly domains = new Map<string, DomainTraffic>();
  /** Paths each domain served with a static Content-Type (by hash): they pass a challenge untouched. */
  private readonly staticPaths = new Map<string, LRUCache<number, true>>();
  /** Per domain: the usual request-body size of each path, for the oversized-body rule. */
  private readonly bodySizes = new Map<string, BodySizes>();
  /** The challenge key, imported once: the HMAC runs on the request path. */
  private readonly secret: KeyObject;
  private readonly pending = newPending();
  private readonly verdict = newVerdict();
  private readonly counters: Record<string, number> = Object.create(null);
  private readonly timer: NodeJS.Timeout;
  private lastStep = Date.now();
  private lastFlush = Date.now();
  private lastExpire = 0;
  private lastLearnedSave = Date.now();

  constructor(config: Config, deps: FilterDeps, store: FilterStore) {
    this.deps = deps;
    this.store = store;
    this.cfg = config.filter;
    this.rules = compileRules(this.cfg.rules);
    this.rulesKey = JSON.stringify(this.cfg.rules);
    this.sources = new LruSourceStore(this.cfg.maxSources, this.rules.count);
    this.offenders = new LRUCache({ max: this.cfg.maxSources });
    this.blacklist = new Blacklist((list) => deps.setBlockList(list));
    this.secret = createSecretKey(store.secret());
    const now = Date.now();
    // After 20 half-lives an offence weighs less than a millionth: forget it.
    store.pruneOffenders(now - 20 * this.halfLifeMs());
    for (const [ip, r] of store.loadOffenders()) this.offenders.set(ip, r);
    this.whitelist.setConfigEntries(this.cfg.whitelist, now);
    for (const w of store.loadWhitelist()) {
      const p = parseWhitelistEntry(w.ip);
      if (p.ok) this.whitelist.add(p.value, 'api', w.note, w.since);
    }
    for (const b of store.loadBans(now)) if (!this.whitelist.covers(b.ip)) this.blacklist.add(b);
    // What was learned of the configured domains' normal traffic, so a restart neither relearns it nor learns an attack as normal.
    const configured = new Set(config.domains.map((d) => d.name));
    for (const [name, l] of store.loadLearned()) if (configured.has(name)) this.restoreLearned(name, l, now);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  get blockList(): net.BlockList { return this.blacklist.blockList; }

  // ---- hooks called by the edge -------------------------------------------------------------

  onConnection(_socket: net.Socket, source: string): boolean {
    if (this.blacklist.has(source)) { this.count('droppedConnections'); return false; }
    const s = this.sources.touch(source);
    if (this.whitelisted(source, s)) return true;
    this.pending[E.connection] += 1;
    return !this.evaluate(source, s, Date.now(), s.domain);
  }

  admit(req: IncomingMessage, res: ServerResponse | null, ctx: RequestContext): boolean {
    const source = ctx.source;
    if (this.blacklist.has(source)) { this.count('droppedRequests'); req.socket.destroy(); return false; }
    const now = Date.now();
    const domain = ctx.domain.name;
    const traffic = this.traffic(domain);
    traffic.requests++;
    const s = this.sources.touch(source);
    if (this.whitelisted(source, s)) return true;
    s.domain = domain;

    const p = this.pending;
    const h = req.headers;
    p[E.request] += 1;
    const odd = headerOddness(h);
    if (odd) p[E.badHeaders] += odd;
    const ua = h['user-agent'];
    if (ua && s.newUserAgent(hashString(ua) || 1)) p[E.uaChange] += 1;

    let challenge = false;
    if (s.trustUntil <= now && ctx.domain.challenge && this.challengeActive(traffic)) challenge = this.mustChallenge(req, s, source, domain, traffic, now);

    if (this.evaluate(source, s, now, domain)) { this.count('droppedRequests'); req.socket.destroy(); return false; }
    if (!challenge) return true;
    if (!res) { this.count('upgradesRefused'); return false; }
    s.challengedAt = now;
    this.count('challenges');
    const trustMs = this.trustMs();
    sendChallenge(res, req.url ?? '/', this.cfg.challenge.cookieName, signToken(this.secret, source, domain, now + trustMs),
      Math.max(1, Math.ceil(trustMs / 1000)), 'encrypted' in req.socket);
    return false;
  }

  observe(o: Observation): void {
    const now = Date.now();
    if (o.domain !== null) {
      const t = this.traffic(o.domain);
      // Latency as the proxy and the application add it (queue and upstream), not the client's own upload time.
      if (o.outcome === 'passed') { t.answered++; t.latencySumMs += o.queuedMs + o.upstreamMs; }
      // An application 503/504 is a sign of attack, whether relayed or replaced by the proxy's page (proxyErrorPages).
      // So is a request refused by the domain's full upstream queue: the site could not serve it.
      if ((o.upstreamError !== null && o.upstreamError !== '5xx') || ((o.outcome === 'passed' || o.proxyReason === 'upstream-page') && (o.status === 503 || o.status === 504))
        || o.proxyReason === 'queue-timeout' || o.proxyReason === 'queue-full') t.upstreamErrors++;
      if (o.queuedMs > 0) t.queued++;
      // The filter's own answers say nothing new about the source.
      if (o.outcome === 'blocked' || o.outcome === 'challenged') return;
    }
    if (this.blacklist.has(o.source)) return;
    const s = this.sources.touch(o.source);
    if (this.whitelisted(o.source, s)) return;
    const p = this.pending;
    // Waited too long for a crowded upstream: the origin's capacity, not the source's doing.
    if (o.proxyReason === 'queue-timeout' || o.proxyReason === 'queue-full') return;
    if (o.proxyReason === 'overloaded') {
      // Refused by the per-source in-flight cap before reaching the upstream: the refusal is the only news.
      p[E.overCap] += 1;
      this.evaluate(o.source, s, now, o.domain);
      return;
    }
    if (o.domain === null) {
      // Refused before routing: unknown Host, malformed request.
      p[E.badRequest] += 1;
      p[E.request] += 1;
      this.evaluate(o.source, s, now, null);
      return;
    }
    const url = o.path;
    const end = pathEnd(url);
    const assetPath = isAssetPath(url, end);
    const asset = isStaticType(o.contentType) || (o.status === 304 && assetPath);
    if (o.proxyReason === 'body-too-slow') p[E.slow] += 1;
    if (o.method === 'POST' || o.method === 'PUT' || o.method === 'PATCH') {
      p[E.post] += 1;
      const sizes = this.bodySizesOf(o.domain);
      const ph = hashRange(url, 0, end);
      if (sizes.oversized(ph, o.bytesIn)) p[E.oversizedBody] += 1;
      // Only sources with a browsing history teach a path its usual size, so a flood cannot teach its own.
      else if (o.outcome === 'passed' && o.status < 400 && s.goodSince > 0 && s.score < 0.3 * this.cfg.scoreThreshold) sizes.learn(ph, o.bytesIn);
    }
    // What the source cost the application: not its own upload time nor its wait in the queue.
    if (o.outcome === 'passed') p[E.upstreamSeconds] += o.upstreamMs / 1000;
    // Assets stay out of the path ring: a page's dozens of assets would push the pages out.
    const seen = asset ? 0 : s.notePath(hashRange(url, 0, end), queryKeysHash(url, end));
    if (seen === 1) p[E.newPath] += 1;
    else if (seen === 2) p[E.cacheBust] += 1;
    if (o.status < 400) {
      if (asset) {
        s.assets++;
        if (o.status === 200 && isStaticType(o.contentType)) this.learnStatic(o.domain, url, end);
      } else if (o.status < 300 && isHtml(o.contentType)) {
        s.pages++;
        // A new page while no asset was ever loaded: a browser would have loaded some after the first page.
        if (s.assets === 0 && s.pages > 1 && seen === 1) p[E.pageNoAssets] += 1;
      }
    }
    if (o.status === 404 || o.status === 410) { if (!assetPath) p[E.notFound] += 1; }
    else if (o.status >= 400 && o.status < 500) p[E.error] += 1;
    if (this.evaluate(o.source, s, now, o.domain)) return;
    // A source that loaded a page and its assets without raising its score has a history: under a later attack it passes unchallenged.
    if (s.goodSince === 0 && s.pages >= 1 && s.assets >= 2 && s.score < 0.3 * this.cfg.scoreThreshold) s.goodSince = now;
  }

  rank(source: string): number {
    if (this.blacklist.has(source)) return 2;
    const s = this.sources.peek(source);
    if (!s) return 1;
    if (this.whitelisted(source, s)) return 0;
    // The score as of the source's last request: leaking since would only lower it, and this is asked often under load.
    if (s.score >= 0.3 * this.cfg.scoreThreshold) return 2;
    return s.goodSince > 0 || s.trustUntil > Date.now() ? 0 : 1;
  }

  onClientError(source: string, kind: string): void {
    const slow = SLOW_CODES.has(kind);
    if (!slow && !kind.startsWith('HPE_')) return;
    if (this.blacklist.has(source)) return;
    const s = this.sources.touch(source);
    if (this.whitelisted(source, s)) return;
    this.pending[slow ? E.slow : E.badRequest] += 1;
    this.evaluate(source, s, Date.now(), s.domain);
  }

  // ---- decisions ----------------------------------------------------------------------------

  /** Runs the rules over the pending events; bans when enforced. True when the source was banned. */
  private evaluate(source: string, s: SourceState, now: number, domain: string | null): boolean {
    const v = this.verdict;
    applyEvents(s.levels, s.last, now, this.pending, this.rules, v);
    s.last = now;
    s.score = v.score;
    // Fast path: nothing overflows and the score is under the lowest line it could have.
    if (v.overflow < 0 && v.score < this.cfg.scoreThreshold * this.cfg.attack.tighten) return false;
    const st = domain !== null ? this.domains.get(domain)?.state : undefined;
    const under = domain !== null ? st?.under === true : this.anyUnderAttack();
    const mode = this.cfg.mode;
    if (v.overflow >= 0) {
      // The fullest overflowing rule may wait for attack mode while another one that also overflows is enforced
      // always (a flood fills 'flood' faster than 'rate-extreme'): the fullest enforced one decides.
      const r = enforced(mode, this.rules.rules[v.overflow].enforce, under) ? v.overflow : this.enforcedOverflow(s.levels, mode, under);
      if (r >= 0) {
        const rule = this.rules.rules[r];
        return this.ban(source, rule.name, explainOverflow(rule, s.levels[r] / rule.capacity), rule.banSeconds, now);
      }
      this.count('overflowsNotEnforced');
    }
    const line = scoreLine(this.cfg.scoreThreshold, st?.upstreamFailing === true, this.cfg.attack.tighten);
    if (v.score >= line) {
      if (!enforced(mode, 'attack', under)) { this.count('scoreNotEnforced'); return false; }
      const top = v.top >= 0 ? this.rules.rules[v.top] : null;
      const reason = explainScore(v.score, line, fills(s.levels, now, now, this.rules), this.rules);
      return this.ban(source, 'score', reason, top?.banSeconds ?? 1800, now);
    }
    return false;
  }

  /** The fullest overflowing rule enforced now, or -1 (levels are already leaked to now by applyEvents). Off the hot path. */
  private enforcedOverflow(levels: number[], mode: Config['filter']['mode'], under: boolean): number {
    let best = -1, bestFill = 1;
    for (let r = 0; r < this.rules.count; r++) {
      const fill = levels[r] / this.rules.capacity[r];
      if (fill > bestFill && enforced(mode, this.rules.rules[r].enforce, under)) { best = r; bestFill = fill; }
    }
    return best;
  }

  /** Bans a source: blacklist, accept-time drop, its open connections closed, the record kept. */
  private ban(source: string, rule: string, reason: string, baseSeconds: number, now: number): boolean {
    const rec = this.offenders.get(source);
    const halfLife = this.halfLifeMs();
    const offences = decayedOffences(rec, now, halfLife);
    const ms = banDurationMs(baseSeconds, offences, { growth: this.cfg.repeatGrowth, halfLifeMs: halfLife, timeScale: this.cfg.timeScale });
    const e: BanEntry = { ip: source, reason, rule, since: now, expiresAt: now + ms };
    this.blacklist.add(e);
    this.store.putBan(e);
    const next = recordOffence(rec, now, halfLife);
    this.offenders.set(source, next);
    this.store.putOffender(source, next);
    // The source starts over when the ban ends.
    this.sources.delete(source);
    this.count('bans');
    this.count('bans.' + rule);
    this.deps.log.info({ source, rule, reason, banSeconds: Math.round(ms / 1000), offences: Math.round(offences * 100) / 100 }, 'source banned');
    this.deps.closeSource(source);
    return true;
  }

  private mustChallenge(req: IncomingMessage, s: SourceState, source: string, domain: string, traffic: DomainTraffic, now: number): boolean {
    const url = req.url ?? '/';
    const end = pathEnd(url);
    // Static assets pass untouched: obviously by path, or because the domain served this path as static.
    if (isAssetPath(url, end) || this.staticPaths.get(domain)?.has(hashRange(url, 0, end))) return false;
    // A source that browsed like a browser before the attack began has a history.
    if (s.goodSince > 0 && s.goodSince < (traffic.state.under ? traffic.state.since : Infinity)) return false;
    const token = cookieValue(req.headers.cookie, this.cfg.challenge.cookieName);
    if (token !== null && verifyToken(this.secret, token, source, domain, now)) {
      s.trustUntil = now + this.trustMs();
      this.count('challengesPassed');
      return false;
    }
    if (s.challengedAt > 0) { this.pending[E.challengeIgnored] += 1; this.count('challengesIgnored'); }
    return true;
  }

  private challengeActive(t: DomainTraffic): boolean {
    const c = this.cfg;
    return c.challenge.enabled && (c.mode === 'always' || (c.mode === 'auto' && t.state.under));
  }

  private whitelisted(source: string, s: SourceState): boolean {
    if (s.wlVersion !== this.whitelist.version) { s.whitelisted = this.whitelist.covers(source); s.wlVersion = this.whitelist.version; }
    return s.whitelisted;
  }

  private anyUnderAttack(): boolean {
    for (const t of this.domains.values()) if (t.state.under) return true;
    return false;
  }

  private traffic(domain: string): DomainTraffic {
    let t = this.domains.get(domain);
    if (!t) { t = new DomainTraffic(); this.domains.set(domain, t); }
    return t;
  }

  private restoreLearned(domain: string, l: LearnedDomain, now: number): void {
    this.domains.set(domain, new DomainTraffic(restoreAttack(l.attack, l.savedAt, now, this.cfg.attack)));
    if (Array.isArray(l.staticPaths)) {
      const m = new LRUCache<number, true>({ max: STATIC_PATHS_PER_DOMAIN });
      for (const h of l.staticPaths) if (typeof h === 'number' && Number.isFinite(h)) m.set(h, true);
      this.staticPaths.set(domain, m);
    }
    this.bodySizesOf(domain).restore(l.bodySizes);
  }

  /** Queues what was learned of each domain for the store (written by the next flush). */
  private saveLearned(now: number): void {
    for (const name of new Set([...this.domains.keys(), ...this.staticPaths.keys(), ...this.bodySizes.keys()])) {
      const t = this.domains.get(name);
      this.store.putLearned(name, {
        savedAt: now,
        attack: saveAttack(t?.state ?? newAttackState()),
        // keys() runs from the most recently used: reversed, a restore puts them back in the same order.
        staticPaths: [...(this.staticPaths.get(name)?.keys() ?? [])].reverse(),
        bodySizes: this.bodySizes.get(name)?.entries() ?? [],
      });
    }
  }

  private bodySizesOf(domain: string): BodySizes {
    let b = this.bodySizes.get(domain);
    if (!b) { b = new BodySizes(STATIC_PATHS_PER_DOMAIN); this.bodySizes.set(domain, b); }
    return b;
  }

  private learnStatic(domain: string, url: string, end: number): void {
    let m = this.staticPaths.get(domain);
    if (!m) { m = new LRUCache({ max: STATIC_PATHS_PER_DOMAIN }); this.staticPaths.set(domain, m); }
    m.set(hashRange(url, 0, end), true);
  }

  private trustMs(): number { return this.cfg.challenge.trustSeconds * 1000 * this.cfg.timeScale; }
  private halfLifeMs(): number { return this.cfg.repeatHalfLifeHours * 3600_000 * this.cfg.timeScale; }
  private count(name: string): void { this.counters[name] = (this.counters[name] ?? 0) + 1; }

  /** When a domain's upstream starts failing (or its queue is crowded) in an attack, its most suspicious sources go first. */
  private banSuspects(domain: string, now: number): void {
    const line = scoreLine(this.cfg.scoreThreshold, true, this.cfg.attack.tighten) / 2;
    const found: { source: string; s: SourceState }[] = [];
    for (const [source, s] of this.sources.entries()) if (s.domain === domain && s.score >= line && !this.whitelisted(source, s)) found.push({ source, s });
    found.sort((a, b) => b.s.score - a.s.score);
    for (const { source, s } of found.slice(0, this.cfg.attack.suspects)) {
      const f = fills(s.levels, s.last, now, this.rules);
      let top = 0;
      for (let i = 1; i < f.length; i++) if (this.rules.weight[i] * Math.min(1, f[i]) > this.rules.weight[top] * Math.min(1, f[top])) top = i;
      this.ban(source, 'suspect', `suspect while the upstream fails or is crowded: ${explainScore(s.score, line, f, this.rules)}`, this.rules.rules[top]?.banSeconds ?? 1800, now);
    }
  }

  private tick(): void {
    const now = Date.now();
    // Each expiry rebuilds the BlockList: with many bans, batch them once a second.
    if (this.blacklist.size < 1000 || now - this.lastExpire >= 1000) {
      this.lastExpire = now;
      for (const e of this.blacklist.expire(now)) { this.store.deleteBan(e.ip); this.count('bansExpired'); }
    }
    if (now - this.lastStep >= 1000) {
      const secs = (now - this.lastStep) / 1000;
      this.lastStep = now;
      const a = this.cfg.attack;
      for (const [name, t] of this.domains) {
        const step = stepAttack(t.state, t.take(secs), a, now);
        if (step.entered) { this.count('attacksStarted'); this.deps.log.warn({ domain: name, reason: t.state.reason }, 'domain under attack: filtering on'); }
        if (step.exited) this.deps.log.info({ domain: name }, 'attack over: filtering relaxed');
        if (step.failingStarted && this.cfg.mode !== 'off') this.banSuspects(name, now);
      }
    }
    if (now - this.lastLearnedSave >= LEARNED_SAVE_MS) { this.lastLearnedSave = now; this.saveLearned(now); }
    if (now - this.lastFlush >= 1000) { this.lastFlush = now; this.flush(); }
  }

  private flush(): void {
    try { this.store.flush(); } catch (e) { this.deps.log.error({ err: (e as Error).message }, 'filter state not saved; will retry'); }
  }

  // ---- operator actions (admin API) ---------------------------------------------------------

  bans(): BanEntry[] { return this.blacklist.all(); }
  banOf(source: string): BanEntry | undefined { return this.blacklist.get(source); }
  isWhitelistedSource(source: string): boolean { return this.whitelist.covers(source); }

  manualBan(source: string, ttlSeconds: number, reason: string): BanEntry {
    const now = Date.now();
    const e: BanEntry = { ip: source, reason, rule: 'manual', since: now, expiresAt: now + ttlSeconds * 1000 };
    // A shorter manual entry replaces a longer automatic one: the operator decides.
    if (this.blacklist.has(source)) this.blacklist.remove(source);
    this.blacklist.add(e);
    this.store.putBan(e);
    this.store.flush();
    this.sources.delete(source);
    this.count('bans');
    this.count('bans.manual');
    this.deps.log.info({ source, rule: 'manual', reason, banSeconds: ttlSeconds }, 'source banned');
    this.deps.closeSource(source);
    return e;
  }

  unban(source: string): boolean {
    const ok = this.blacklist.remove(source);
    if (ok) { this.store.deleteBan(source); this.store.flush(); }
    return ok;
  }

  whitelistEntries() { return this.whitelist.all(); }
  whitelistEntry(text: string) { return this.whitelist.get(text); }

  addWhitelist(range: ParsedRange, note: string) {
    const e = this.whitelist.add(range, 'api', note, Date.now());
    this.store.putWhitelist({ ip: e.ip, origin: 'api', note, since: e.since });
    // Whitelisted sources are never blocked: lift the bans it covers.
    for (const b of this.blacklist.all()) if (this.whitelist.covers(b.ip)) { this.blacklist.remove(b.ip); this.store.deleteBan(b.ip); }
    this.store.flush();
    return e;
  }

  removeWhitelist(text: string): boolean {
    const ok = this.whitelist.remove(text);
    if (ok) { this.store.deleteWhitelist(text); this.store.flush(); }
    return ok;
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  reconfigure(config: Config): void {
    const f = config.filter;
    const key = JSON.stringify(f.rules);
    if (key !== this.rulesKey || f.maxSources !== this.cfg.maxSources) {
      // New rules mean new bucket layouts: sources start over (bans and lists stay).
      this.rules = compileRules(f.rules);
      this.rulesKey = key;
      this.sources = new LruSourceStore(f.maxSources, this.rules.count);
    }
    this.cfg = f;
    this.whitelist.setConfigEntries(f.whitelist, Date.now());
    for (const b of this.blacklist.all()) if (this.whitelist.covers(b.ip)) { this.blacklist.remove(b.ip); this.store.deleteBan(b.ip); }
  }

  registerRoutes(admin: AdminServer): void { registerFilterRoutes(admin, this); }

  snapshot(): FilterSnapshot {
    const underAttack: string[] = [];
    for (const [name, t] of this.domains) if (t.state.under) underAttack.push(name);
    return {
      blacklistSize: this.blacklist.size,
      underAttack,
      counters: {
        ...this.counters,
        droppedConnections: (this.counters.droppedConnections ?? 0) + this.blacklist.tally.refused,
        sourcesTracked: this.sources.size, sourcesEvicted: this.sources.evicted,
      },
    };
  }

  attackState(domain: string): Readonly<AttackState> | undefined { return this.domains.get(domain)?.state; }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.saveLearned(Date.now());
    this.flush();
  }
}
