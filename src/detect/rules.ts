// Detectors as data (the CrowdSec shape): each rule is a leaky bucket that
// counts one kind of event per source, leaks at a steady rate, and bans the
// source for `banSeconds` when it overflows. Operators read and tune these in
// `filter.rules`; the engine that runs them (engine.ts) stays small.

/** The events a source's traffic produces; each rule counts one of them. */
export const EVENTS = [
  'request',          // any request (weight 1)
  'connection',       // a new TCP connection (churn)
  'badHeaders',       // missing User-Agent/Accept (2), missing Accept-Language (1)
  'uaChange',         // a User-Agent not among the source's 4 most recent ones
  'cacheBust',        // a path seen before, asked again with a different set of query keys
  'newPath',          // a non-static path not among the source's recent ones (judged by response Content-Type)
  'notFound',         // 404/410 on a path that does not look like an asset
  'error',            // any other 4xx/5xx answered by the upstream
  'pageNoAssets',     // a second HTML page from a source that never loaded an asset
  'upstreamSeconds',  // upstream time the source's requests cost (weight = seconds)
  'post',             // a request with a body (POST, PUT, PATCH)
  'slow',             // headers or body slower than the deadlines (slowloris, slow POST)
  'badRequest',       // unparseable or refused request (parse errors, unknown Host)
  'challengeIgnored', // came back without the cookie it was given
  'overCap',          // refused because the source already had limits.maxInflightPerSource requests in flight
  'oversizedBody',    // a request body far larger than the path usually receives (learned per path, body-sizes.ts)
] as const;

export type EventName = typeof EVENTS[number];
export const EVENT_INDEX: Record<EventName, number> = Object.fromEntries(EVENTS.map((e, i) => [e, i])) as Record<EventName, number>;

export interface Rule {
  /** Short id, used in counters and ban reasons. */
  name: string;
  /** What an operator reads in the blacklist ("request flood"). */
  label: string;
  /** The event it counts, per source. */
  on: EventName;
  /** Bucket size: the source is caught when its level passes this. */
  capacity: number;
  /** Events forgiven per second. */
  leakPerSecond: number;
  /** Ban time for this attack type (clamped to 5 min .. 8 h). */
  banSeconds: number;
  /** Share in the combined score at a full bucket (0 = not scored). */
  weight: number;
  /** 'attack': enforced in auto mode only while the domain is under attack; 'always': signals people never produce, enforced in auto mode too. */
  enforce: 'attack' | 'always';
}

/** Defaults, tuned so that a browser (page, then dozens of assets, think time) stays far below every capacity. */
export const DEFAULT_RULES: Rule[] = [
  { name: 'flood', label: 'request flood', on: 'request', capacity: 200, leakPerSecond: 20, banSeconds: 1800, weight: 0.45, enforce: 'attack' },
  // The same event at a rate no person reaches: a page load is a few dozen requests, a heavy one ~150, then think
  // time; 50/s forgiven is some twenty busy people behind one NAT address. The bucket holds the burst of some forty
  // people behind one address arriving together, before any of them could be counted (a page and its assets each:
  // ~250 requests in two seconds); 500 beyond the leak is a single-source flood (1000 req/s is caught in half a
  // second, 300 req/s in two). Enforced without waiting for attack mode, so a flood is banned before the upstream has
  // to show it is hurt. Weight 0: 'flood' already scores the request rate.
  { name: 'rate-extreme', label: 'request rate far beyond any person', on: 'request', capacity: 500, leakPerSecond: 50, banSeconds: 1800, weight: 0, enforce: 'always' },
  // A browser holds at most 6 requests in flight per host, so it never meets the cap (limits.maxInflightPerSource);
  // a source refused by it again and again keeps more requests open than people do. Weight 0: a refusal is a symptom.
  { name: 'over-cap', label: 'keeps more requests in flight than the per-source cap', on: 'overCap', capacity: 40, leakPerSecond: 2, banSeconds: 1800, weight: 0, enforce: 'always' },
  { name: 'churn', label: 'new connection per request', on: 'connection', capacity: 60, leakPerSecond: 2, banSeconds: 1800, weight: 0.45, enforce: 'attack' },
  { name: 'headers', label: 'odd header profile', on: 'badHeaders', capacity: 300, leakPerSecond: 2, banSeconds: 900, weight: 0.5, enforce: 'attack' },
  { name: 'ua-rotation', label: 'User-Agent changes per request', on: 'uaChange', capacity: 30, leakPerSecond: 0.5, banSeconds: 3600, weight: 0.5, enforce: 'attack' },
  { name: 'cache-bust', label: 'cache-busting query strings', on: 'cacheBust', capacity: 10, leakPerSecond: 0.5, banSeconds: 3600, weight: 0.5, enforce: 'attack' },
  { name: 'crawl', label: 'crawling non-static pages', on: 'newPath', capacity: 40, leakPerSecond: 1, banSeconds: 1800, weight: 0.45, enforce: 'attack' },
  // People rarely meet ten 404s on pages (assets are not counted) within a minute; scanners meet hundreds a second.
  // Enforced always: a scan costs the upstream nothing visible, so attack mode would never turn on for it.
  { name: 'probe', label: '404 scanning', on: 'notFound', capacity: 10, leakPerSecond: 0.2, banSeconds: 3600, weight: 0.45, enforce: 'always' },
  { name: 'errors', label: 'error responses', on: 'error', capacity: 60, leakPerSecond: 1, banSeconds: 900, weight: 0.35, enforce: 'attack' },
  { name: 'no-assets', label: 'pages without assets', on: 'pageNoAssets', capacity: 12, leakPerSecond: 0.1, banSeconds: 1800, weight: 0.5, enforce: 'attack' },
  { name: 'expensive', label: 'expensive requests (upstream time)', on: 'upstreamSeconds', capacity: 30, leakPerSecond: 0.5, banSeconds: 1800, weight: 0.45, enforce: 'attack' },
  { name: 'post-flood', label: 'POST volume', on: 'post', capacity: 40, leakPerSecond: 0.5, banSeconds: 1800, weight: 0.45, enforce: 'attack' },
  // 2 MB posted to a form that takes 100 bytes, again and again: no person does that, and it costs the application's
  // bandwidth whether or not it is crowded yet. Judged only on paths that learned their sizes (body-sizes.ts).
  { name: 'oversized-body', label: 'bodies far larger than the path usually receives', on: 'oversizedBody', capacity: 5, leakPerSecond: 0.05, banSeconds: 1800, weight: 0.5, enforce: 'always' },
  { name: 'slow', label: 'slow or partial requests (slowloris, slow POST)', on: 'slow', capacity: 3, leakPerSecond: 0.05, banSeconds: 3600, weight: 0.5, enforce: 'always' },
  { name: 'malformed', label: 'malformed requests', on: 'badRequest', capacity: 20, leakPerSecond: 0.2, banSeconds: 1800, weight: 0.35, enforce: 'always' },
  { name: 'challenge', label: 'ignores the cookie challenge', on: 'challengeIgnored', capacity: 4, leakPerSecond: 0.05, banSeconds: 3600, weight: 0.5, enforce: 'attack' },
];

const RULE_KEYS = ['name', 'label', 'on', 'capacity', 'leakPerSecond', 'banSeconds', 'weight', 'enforce'];
const NAME = /^[a-zA-Z][\w-]{0,39}$/;
const positive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0;

/** Checks `filter.rules` and fills optional fields; problems name the key, e.g. `filter.rules[2].capacity: must be a positive number`. Pure. */
export function validateRules(v: unknown, at: string, problems: string[]): Rule[] {
  if (!Array.isArray(v)) { problems.push(`${at}: must be an array of rules`); return []; }
  const out: Rule[] = [];
  const seen = new Set<string>();
  v.forEach((r, i) => {
    const k = `${at}[${i}]`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) { problems.push(`${k}: must be an object {name, label, on, capacity, leakPerSecond, banSeconds}`); return; }
    const o = r as Record<string, unknown>;
    const start = problems.length;
    for (const key of Object.keys(o)) if (!RULE_KEYS.includes(key)) problems.push(`${k}.${key}: unknown key`);
    if (typeof o.name !== 'string' || !NAME.test(o.name)) problems.push(`${k}.name: must be a short identifier (letters, digits, - and _)`);
    else if (seen.has(o.name)) problems.push(`${k}.name: "${o.name}" is used by another rule`);
    else seen.add(o.name);
    if (o.label !== undefined && typeof o.label !== 'string') problems.push(`${k}.label: must be a string`);
    if (typeof o.on !== 'string' || !(EVENTS as readonly string[]).includes(o.on)) problems.push(`${k}.on: must be one of ${EVENTS.join(', ')}`);
    for (const f of ['capacity', 'leakPerSecond', 'banSeconds'] as const) if (!positive(o[f])) problems.push(`${k}.${f}: must be a positive number`);
    if (o.weight !== undefined && !(typeof o.weight === 'number' && Number.isFinite(o.weight) && o.weight >= 0)) problems.push(`${k}.weight: must be a number >= 0`);
    if (o.enforce !== undefined && o.enforce !== 'attack' && o.enforce !== 'always') problems.push(`${k}.enforce: must be "attack" or "always"`);
    if (problems.length > start) return;
    out.push({
      name: o.name as string, label: (o.label as string | undefined) ?? (o.name as string), on: o.on as EventName,
      capacity: o.capacity as number, leakPerSecond: o.leakPerSecond as number, banSeconds: o.banSeconds as number,
      weight: (o.weight as number | undefined) ?? 0.45, enforce: (o.enforce as Rule['enforce'] | undefined) ?? 'attack',
    });
  });
  return out;
}

/** Rules laid out as parallel arrays, with the rules of each event listed, so the engine loops over numbers only. */
export interface CompiledRules {
  rules: Rule[];
  count: number;
  capacity: Float64Array;
  leakPerMs: Float64Array;
  weight: Float64Array;
  /** ruleEvent[r] = index of the event rule r counts. */
  ruleEvent: Int32Array;
}

export function compileRules(rules: Rule[]): CompiledRules {
  const n = rules.length;
  const c: CompiledRules = {
    rules, count: n, capacity: new Float64Array(n), leakPerMs: new Float64Array(n), weight: new Float64Array(n), ruleEvent: new Int32Array(n),
  };
  rules.forEach((r, i) => {
    c.capacity[i] = r.capacity;
    c.leakPerMs[i] = r.leakPerSecond / 1000;
    c.weight[i] = r.weight;
    c.ruleEvent[i] = EVENT_INDEX[r.on];
  });
  return c;
}
