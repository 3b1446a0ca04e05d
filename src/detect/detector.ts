// Detection: turns what sources do into events (extract.ts), runs the rules
// over them (engine.ts, as data in rules.ts), and gives the flow a verdict:
// pass, drop, or challenge. It never writes a response nor touches a socket:
// the flow enforces the verdict, Decisions records a ban. Attack mode per
// domain (attack-mode.ts) is stepped by tick(). Time comes from the injected
// clock, so every decision here can be tested on a fake one.
import type { Config, DomainConfig } from '../config/schema.ts';
import type { RequestHead } from '../http/head.ts';
import type { Observation } from '../observe/observation.ts';
import { isAppError, isMalformed, isQueueRefusal, upstreamInTrouble } from '../observe/observation.ts';
import { compileRules, EVENT_INDEX as E, type CompiledRules } from './rules.ts';
import { applyEvents, enforcedOverflow, fills, newPending, newVerdict, scaleOf } from './engine.ts';
import { explainOverflow, explainScore, scoreLine } from './score.ts';
import { enforced } from '../decisions/ban-time.ts';
import { LruSourceStore, type SourceState, type SourceStore } from './sources.ts';
import { Knowledge, DomainKnowledge } from './knowledge.ts';
import { answerEvents, requestEvents, staticRequest } from './extract.ts';
import { DomainAttacks } from './domain-attacks.ts';
import { Counters } from './counters.ts';
import { suspects } from './suspects.ts';
import { DomainPolicies, exemptRefusal } from '../challenge/policy.ts';
import { nextMark } from '../challenge/cookieless.ts';
import { SharedAddresses, sharedOptions, busierThanOne } from './shared-address.ts';
import { PASS, DROP, SLOW_CODES, SLOW_READER, CHALLENGE_GRACE_MS, NAT_GRACE_MS, type Verdict, type DetectorDeps } from './verdict.ts';

export type { Verdict, DetectorDeps };

export class Detector {
  private cfg: Config['filter'];
  private rules: CompiledRules;
  private rulesKey: string;
  private sources: SourceStore;
  readonly knowledge = new Knowledge();
  readonly counters = new Counters();
  readonly shared: SharedAddresses;
  private readonly pending = newPending();
  private readonly verdict = newVerdict();
  private readonly policies = new DomainPolicies();
  private readonly d: DetectorDeps;
  /** Attack mode of each domain, stepped over time (tick, a timer at the edge). */
  readonly attacks: DomainAttacks;

  constructor(config: Config, deps: DetectorDeps) {
    this.d = deps;
    this.cfg = config.filter;
    this.rules = compileRules(this.cfg.rules);
    this.rulesKey = JSON.stringify(this.cfg.rules);
    this.sources = new LruSourceStore(this.cfg.maxSources, this.rules.count);
    this.shared = new SharedAddresses(sharedOptions(config), deps.now);
    const now = deps.now();
    this.attacks = new DomainAttacks({ ...deps, knowledge: this.knowledge, counters: this.counters, filter: () => this.cfg, banSuspects: (d, t) => this.banSuspects(d, t) });
    const configured = new Set(config.domains.map((d) => d.name));
    for (const [name, l] of deps.store.loadLearned()) if (configured.has(name)) this.knowledge.set(name, DomainKnowledge.restore(l, now, this.cfg.attack));
  }

  // ---- what the flow asks ---------------------------------------------------------------------

  /** A new client connection; false means it must be dropped. */
  onConnection(source: string): boolean {
    if (this.d.decisions.has(source)) { this.counters.droppedConnections++; return false; }
    const s = this.sources.touch(source);
    if (this.whitelisted(source, s)) return true;
    this.pending[E.connection] += 1;
    return !this.evaluate(source, s, this.d.now(), s.domain);
  }

  /** Before forwarding a request to its domain. An upgrade cannot follow a challenge: it passes or is dropped. */
  judge(head: RequestHead, domain: DomainConfig, upgrade: boolean): Verdict {
    const source = head.source;
    const now = this.d.now();
    if (this.d.decisions.has(source)) { this.counters.droppedRequests++; return this.refusal(head, domain, now); }
    const k = this.knowledge.of(domain.name);
    k.traffic.requests++;
    const s = this.sources.touch(source);
    if (this.whitelisted(source, s)) return PASS;
    s.domain = domain.name;
    // Trust is per client (its token), not per address: one person's token does not vouch for the others behind a NAT.
    const client = head.headers.cookie !== undefined ? this.d.challenge.client?.(head, domain.name, now) ?? null : null;
    const conn = head.conn;
    this.shared.note(now, source, client, head.headers.cookie, conn ? conn.clientId : null);
    if (conn && client !== null) { conn.clientId = client; conn.challenged = null; }
    requestEvents(head, s, this.pending);
    const challenge = client === null && domain.challenge && this.challengeActive(k) && !this.exempt(head, domain)
      && this.mustChallenge(head, s, k, now);
    if (client !== null) { s.challengedAt = 0; if (s.trustUntil <= now) { s.trustUntil = now + this.trustMs(); this.counters.challengesPassed++; } }
    if (this.evaluate(source, s, now, domain.name)) { this.counters.droppedRequests++; return this.refusal(head, domain, now); }
    if (!challenge) return PASS;
    if (upgrade) { this.counters.upgradesRefused++; return DROP; }
    return this.challenge(head, s, domain, now);
  }

  /** At its turn in the upstream queue, a request let through when it arrived: the challenge it would get now (the
   *  domain came under attack while it waited), or PASS. Its events were counted when it arrived, not again. */
  judgeAtTurn(head: RequestHead, domain: DomainConfig): Verdict {
    const k = this.knowledge.of(domain.name), s = this.sources.peek(head.source), now = this.d.now();
    if (!s || !domain.challenge || !this.challengeActive(k) || this.whitelisted(head.source, s) || this.exempt(head, domain)) return PASS;
    if (head.headers.cookie !== undefined && (this.d.challenge.client?.(head, domain.name, now) ?? null) !== null) return PASS;
    return this.mustChallenge(head, s, k, now) ? this.challenge(head, s, domain, now) : PASS;
  }

  private challenge(head: RequestHead, s: SourceState, domain: DomainConfig, now: number): Verdict {
    s.challengedAt ||= now; // the oldest challenge not answered since
    this.counters.challenges++;
    // A client that follows the redirect but keeps no cookie gets a page that says so (challenge/cookieless.ts). Per
    // connection, not per address: the people behind a NAT come on connections of their own.
    const conn = head.conn;
    let cookieless = false;
    if (conn) ({ mark: conn.challenged, cookieless } = nextMark(conn.challenged, head.url, head.headers, domain.name, now));
    return { kind: 'challenge', answer: this.d.challenge.issue(head, domain.name, now, this.trustMs(), cookieless) };
  }

  /** After every request the pipeline handled. */
  observe(o: Observation): void {
    const now = this.d.now();
    const k = o.domain !== null ? this.knowledge.of(o.domain) : null;
    if (k) {
      const t = k.traffic;
      // The application's latency: not the client's upload, nor our queue (waiting is judged with latency by the adaptive limit).
      if (o.outcome === 'passed' && o.noLatency !== true) t.answer(o.upstreamMs);
      if (upstreamInTrouble(o)) t.upstreamErrors++;
      else if (isAppError(o)) t.appErrors++;
      if (o.queuedMs > 0) t.queued++;
      // The filter's own answers say nothing new about the source.
      if (o.outcome === 'blocked' || o.outcome === 'challenged') return;
    }
    if (this.d.decisions.has(o.source)) return;
    const s = this.sources.touch(o.source);
    if (this.whitelisted(o.source, s)) return;
    // Refused for the origin's capacity (its queue, the newcomers' slice): not the source's doing.
    if (isQueueRefusal(o.proxyReason) || o.proxyReason === 'newcomer-share') return;
    const p = this.pending;
    if (o.proxyReason === 'overloaded') {
      // Refused by the per-source in-flight cap before reaching the upstream: the refusal is the only news.
      p[E.overCap] += 1;
      this.evaluate(o.source, s, now, o.domain);
      return;
    }
    if (k === null || isMalformed(o.proxyReason)) {
      // Refused before routing. A malformed request (no Host, a bad one) is a sign; a well-formed one for a name this
      // proxy does not serve (421) is people's DNS or an alias missing from the config, and only its rate counts.
      if (o.proxyReason !== 'unknown-host') p[E.badRequest] += 1;
      p[E.request] += 1;
      this.evaluate(o.source, s, now, null);
      return;
    }
    const goodLine = 0.3 * this.cfg.scoreThreshold;
    answerEvents(o, s, k, p, s.goodSince > 0 && s.score < goodLine);
    // A request that waited, of a source that fetched a page and assets at a person's pace (score low, a modest share of the origin): a crowd.
    if (o.queuedMs > 0 && s.pages > 0 && s.assets > 0 && s.score < goodLine && this.d.heavy?.(o.domain!, o.source) !== true) k.traffic.queuedBrowsing++;
    if (this.evaluate(o.source, s, now, o.domain)) return;
    // A source that loaded a page and its assets without raising its score has a history: under a later attack it passes unchallenged.
    if (s.goodSince === 0 && s.pages >= 1 && s.assets >= 2 && s.score < goodLine) s.goodSince = now;
  }

  /** Standing of a source when requests must wait for the upstream: 0 has a history, 1 unknown, 2 suspicious. */
  rank(source: string): number {
    if (this.d.decisions.has(source)) return 2;
    const s = this.sources.peek(source);
    if (!s) return 1;
    if (this.whitelisted(source, s)) return 0;
    // The score as of the source's last request: leaking since would only lower it, and this is asked often under load.
    if (s.score >= 0.3 * this.cfg.scoreThreshold) return 2;
    return s.goodSince > 0 || s.trustUntil > this.d.now() ? 0 : 1;
  }

  /** A client the send deadline cut after its request was observed (a slow reader of a response that fitted in the
   *  read-ahead): as slow as a slowloris. */
  onSlowReader(source: string): void { this.onClientError(source, SLOW_READER); }

  /** A request that never became one (slow headers, parse errors, timeouts). */
  onClientError(source: string, kind: string): void {
    const slow = SLOW_CODES.has(kind);
    if (!slow && !kind.startsWith('HPE_')) return;
    if (this.d.decisions.has(source)) return;
    const s = this.sources.touch(source);
    if (this.whitelisted(source, s)) return;
    this.pending[slow ? E.slow : E.badRequest] += 1;
    this.evaluate(source, s, this.d.now(), s.domain);
  }

  // ---- decisions ------------------------------------------------------------------------------

  /** Runs the rules over the pending events; bans when enforced. True when the source was banned. */
  private evaluate(source: string, s: SourceState, now: number, domain: string | null): boolean {
    const v = this.verdict;
    const people = this.shared.factor(now, source);
    applyEvents(s.t.f32, s.last, now, this.pending, this.rules, v, people, s.levelsAt);
    s.last = now;
    s.score = v.score;
    // Fast path: nothing overflows and the score is under the lowest line it could have.
    if (v.overflow < 0 && v.score < this.cfg.scoreThreshold * this.cfg.attack.tighten) return false;
    const st = domain !== null ? this.knowledge.peek(domain)?.traffic.state : undefined;
    const under = domain !== null ? st?.under === true : this.knowledge.anyUnderAttack();
    // A source with a history that breaks attack rules in the first seconds of an attack may be many people behind one
    // address, not counted yet (no cookies before the attack): its people are asked for their own (mustChallenge) first.
    const mode = this.cfg.mode, graced = under && st !== undefined && s.goodSince > 0 && s.goodSince < st.since && now - st.since < NAT_GRACE_MS;
    const enforcedNow = (r: number) => enforced(mode, this.rules.rules[r].enforce, under) && !(graced && this.rules.rules[r].enforce === 'attack');
    if (v.overflow >= 0) {
      // The fullest overflowing rule may wait for attack mode while another one that also overflows is enforced
      // always (a flood fills 'flood' faster than 'rate-extreme'): the fullest enforced one decides.
      const r = enforcedNow(v.overflow) ? v.overflow : enforcedOverflow(s.levels, this.rules, people, enforcedNow);
      if (r >= 0) {
        const rule = this.rules.rules[r];
        return this.ban(source, rule.name, explainOverflow(rule, s.levels[r] / (rule.capacity * scaleOf(this.rules, r, people))), rule.banSeconds, now);
      }
      this.counters.overflowsNotEnforced++;
    }
    const line = scoreLine(this.cfg.scoreThreshold, st?.upstreamFailing === true, this.cfg.attack.tighten);
    if (v.score >= line) {
      if (!enforced(mode, 'attack', under) || graced) { this.counters.scoreNotEnforced++; return false; }
      const top = v.top >= 0 ? this.rules.rules[v.top] : null;
      return this.ban(source, 'score', explainScore(v.score, line, fills(s.levels, now, now, this.rules, people), this.rules), top?.banSeconds ?? 1800, now);
    }
    return false;
  }

  private ban(source: string, rule: string, reason: string, baseSeconds: number, now: number): true {
    this.d.decisions.ban(source, rule, reason, baseSeconds, now);
    // The source starts over when the ban ends.
    this.sources.delete(source);
    return true;
  }

  /** A navigation with no valid token. challengedAt is cleared when one comes back: at a NAT, the next person (or
   *  one arriving in the same instant) ignored nothing; a client that never returns its cookie keeps it set.
   *  A source with a history passes, unless it is as busy as several people (a NAT): then each is asked, and counted. */
  private mustChallenge(head: RequestHead, s: SourceState, k: DomainKnowledge, now: number): boolean {
    if (staticRequest(head.url, k)) return false;
    // A source that browsed like a browser before the attack began has a history.
    if (s.goodSince > 0 && s.goodSince < (k.traffic.state.under ? k.traffic.state.since : Infinity) && !busierThanOne(s.levels, this.rules, this.shared.factor(now, head.source))) return false;
    // One ignored challenge per grace period, and its clock starts again: a browser with cookies off follows the 302
    // up to 20 times in one page load (2 s on a slow link), which counted every hop past the first second and filled
    // the bucket — one page load was an hour's ban for everyone behind the address.
    if (s.challengedAt > 0 && now - s.challengedAt > CHALLENGE_GRACE_MS) { this.pending[E.challengeIgnored] += 1; this.counters.challengesIgnored++; s.challengedAt = now; }
    return true;
  }

  /** A banned source's request: dropped, or, when the policy exempts it, told with 429 + Retry-After (the ban's) first. */
  private refusal(head: RequestHead, domain: DomainConfig, now: number): Verdict {
    const ban = this.exempt(head, domain) ? this.d.decisions.banOf(head.source) : undefined;
    return ban ? { kind: 'refuse', answer: exemptRefusal(head.headers.accept, (ban.expiresAt - now) / 1000) } : DROP;
  }

  /** The policy exempts it (an API call, an app: no cookie round trip): judged by the rules alone, refused with a 429. */
  exempt(head: RequestHead, domain: DomainConfig): boolean { return !this.policies.challengeable(domain, head); }

  /** A static asset (by path, or served as static): cheap, so the challenge lets it through, and so does the newcomers' slice. */
  cheap(url: string, domain: string): boolean { return staticRequest(url, this.knowledge.peek(domain)); }

  /** When the domain's current attack began, 0 when it is not under attack or the filter only observes (mode off):
   *  what came before it is no part of it. Its signs came enterSeconds before attack mode, and began up to a second
   *  before the first second that showed them. */
  attackSince(domain: string): number {
    const st = this.cfg.mode === 'off' ? undefined : this.knowledge.peek(domain)?.traffic.state;
    return st?.under ? Math.max(1, st.since - (this.cfg.attack.enterSeconds + 1) * 1000) : 0;
  }

  private challengeActive(k: DomainKnowledge): boolean {
    const c = this.cfg;
    return c.challenge.enabled && (c.mode === 'always' || (c.mode === 'auto' && k.traffic.state.under));
  }

  private whitelisted(source: string, s: SourceState): boolean {
    const wl = this.d.decisions.whitelist;
    if (s.wlVersion !== wl.version) { s.whitelisted = wl.covers(source); s.wlVersion = wl.version; }
    return s.whitelisted;
  }
  private trustMs(): number { return this.cfg.challenge.trustSeconds * 1000 * this.cfg.timeScale; }

  /** When a domain's upstream starts failing (or its queue is crowded) in an attack, its most suspicious sources go first. */
  private banSuspects(domain: string, now: number): void {
    const q = { domain, since: this.knowledge.peek(domain)?.traffic.state.since ?? now, line: scoreLine(this.cfg.scoreThreshold, true, this.cfg.attack.tighten) / 2, count: this.cfg.attack.suspects, rules: this.rules, now };
    for (const x of suspects(this.sources.entries(), { ...q, people: (src) => this.shared.factor(now, src), whitelisted: (src, s) => this.whitelisted(src, s) })) this.ban(x.source, 'suspect', x.reason, x.banSeconds, now);
  }

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
    this.d.challenge.reconfigure?.(config);
  }

  /** Forgets a source's state (an operator banned it: it starts over when the ban ends). */
  forget(source: string): void { this.sources.delete(source); }

  get sourcesTracked(): number { return this.sources.size; }
  get sourcesEvicted(): number { return this.sources.evicted; }
}
