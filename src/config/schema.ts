// The config schema: every key, its type, default and meaning, in one place.
// convict reads it (defaults, types, SCRUBBER_* environment overrides);
// the structured parts (listeners, domains, certificates) are checked element
// by element in validate.ts, because convict does not look inside arrays.
import type { ChallengeRule } from '../challenge/policy.ts';
import os from 'node:os';
import { DEFAULT_RULES, type Rule } from '../detect/rules.ts';
import { DEFAULT_SESSION_COOKIES } from '../detect/shared-address.ts';

export interface HostPort { host: string; port: number }

export interface HealthCheckConfig {
  type: 'tcp' | 'http' | 'https';
  path: string;
  intervalMs: number;
  timeoutMs: number;
  fall: number;
  rise: number;
}

export interface DomainConfig {
  name: string;
  aliases: string[];
  upstreams: string[];
  backup: string[];
  upstreamTls: boolean;
  healthCheck: HealthCheckConfig;
  maintenance: { enabled: boolean; redirect: string | null; retryAfterSeconds: number };
  proxyErrorPages: boolean;
  maxInflight: number;
  /** false: the cookie challenge is never sent for this domain (APIs, clients that keep no cookies). */
  challenge: boolean;
  /** Which requests may get the cookie challenge (first match wins, then: only browser navigations). */
  challengePolicy: ChallengeRule[];
  /** TLS passthrough: routed by the ClientHello's SNI and spliced to the upstreams (TLS servers) undecrypted. */
  passthrough: boolean;
  /** Passthrough only: "v2" sends the PROXY protocol v2 header to the upstream first. */
  proxyProtocol: 'none' | 'v2';
}

export interface Config {
  listen: HostPort[];
  tls: { listen: HostPort[]; certs: { domains: string[]; cert: string; key: string }[]; handshakeTimeoutMs: number; http2: boolean; ticketKeyRotateSeconds: number };
  admin: { host: string; port: number; token: string };
  upstream: {
    connectTimeoutMs: number;
    connectAttempts: number;
    responseTimeoutMs: number;
    bodyTimeoutMs: number;
    maxConnections: number;
    keepAliveTimeoutMs: number;
    rejectUnauthorized: boolean;
    caFile: string;
  };
  limits: {
    maxBodyBytes: number;
    postBudgetBytes: number;
    maxHeaderCount: number;
    maxHeaderBytes: number;
    headerTimeoutMs: number;
    requestTimeoutMs: number;
    idleTimeoutMs: number;
    minBodyRateBytesPerSec: number;
    minBodyRateGraceMs: number;
    sendTimeoutMs: number;
    maxConnectionsPerSource: number;
    maxInflightPerSource: number;
    bufferBodyBytes: number;
    queueTimeoutMs: number;
    maxQueued: number;
    adaptive: { enabled: boolean; initialLimit: number; minLimit: number };
  };
  pages: { dir: string; brand: string };
  filter: {
    mode: 'auto' | 'always' | 'off';
    rules: Rule[];
    scoreThreshold: number;
    whitelist: string[];
    maxSources: number;
    maxBans: number;
    timeScale: number;
    repeatGrowth: number;
    repeatHalfLifeHours: number;
    challenge: { enabled: boolean; cookieName: string; trustSeconds: number; maxNetworksPerToken: number };
    nat: { sessionCookies: string[]; maxFactor: number; cookieMaxFactor: number };
    fairShare: { enabled: boolean; overShareRatio: number; banAfterSeconds: number; newcomerSources: number };
    attack: {
      minRps: number; rateFactor: number; latencyFactor: number; minLatencyMs: number; errorRatio: number;
      enterSeconds: number; exitSeconds: number; learnSeconds: number; tighten: number; suspects: number;
    };
  };
  state: { dir: string; redis: { url: string; prefix: string } };
  stats: { flushIntervalMs: number; retentionDays: number };
  shutdown: { drainTimeoutMs: number };
  log: { level: string };
  workers: number;
  workerWatchdogMs: number;
  demo: { enabled: boolean; host: string; port: number };
  domains: DomainConfig[];
}

const nat = 'nat';
const int = 'int';

export const schema = {
  listen: {
    doc: 'Plain HTTP listeners: [{host, port}].',
    format: 'json-array',
    default: [{ host: '127.0.0.1', port: 8080 }],
  },
  tls: {
    listen: { doc: 'HTTPS listeners: [{host, port}].', format: 'json-array', default: [] },
    certs: {
      doc: 'Certificates chosen by SNI: [{domains: [..], cert: PEM file, key: PEM file}].',
      format: 'json-array',
      default: [],
    },
    http2: { doc: 'Offer HTTP/2 by ALPN on the TLS listeners (h2 and http/1.1); false: HTTP/1.1 only. Changing it needs a restart.', format: Boolean, default: true },
    handshakeTimeoutMs: { doc: 'Deadline from accept to a finished TLS handshake (for a passthrough domain: to a complete ClientHello); then the connection is closed and counted against its source as slow. At least 1.', format: nat, default: 10000 },
    ticketKeyRotateSeconds: { doc: 'TLS session tickets: how long one ticket key is used (at least 60). Every worker, every node on the same Redis, and this node after a restart use the same key within a period, counted from the epoch; at each change, returning clients make one full handshake. Changing it needs a restart.', format: nat, default: 43200 },
  },
  admin: {
    host: { doc: 'Admin API / dashboard address (an IPv6 address without brackets, e.g. ::1). A non-loopback host needs a token.', format: String, default: '127.0.0.1' },
    port: { doc: 'Admin API / dashboard port (0 = any free port).', format: 'port', default: 9090 },
    token: { doc: 'Bearer token for the admin API ("" = no auth, loopback only); visible ASCII only (0x21-0x7E, no spaces).', format: String, default: '', sensitive: true },
  },
  upstream: {
    connectTimeoutMs: { doc: 'How long one connect attempt waits for the upstream to accept.', format: nat, default: 9000 },
    connectAttempts: { doc: 'Connect attempts per upstream after timeouts, before failing over.', format: nat, default: 2 },
    responseTimeoutMs: { doc: 'Time for the upstream to send response headers; then 504.', format: nat, default: 60000 },
    bodyTimeoutMs: { doc: 'Longest pause between two chunks of an upstream response body.', format: nat, default: 300000 },
    maxConnections: { doc: 'Connection cap per upstream server (0 = unlimited). With every connection of the upstreams a request would go to in use, it waits in the domain\'s fair queue (limits.queueTimeoutMs), never in the connection pool.', format: nat, default: 256 },
    keepAliveTimeoutMs: { doc: 'Idle upstream keep-alive connections are closed after this.', format: nat, default: 4000 },
    rejectUnauthorized: { doc: 'Verify certificates of HTTPS upstreams.', format: Boolean, default: true },
    caFile: { doc: 'Extra CA bundle (PEM file) trusted for HTTPS upstreams, besides the system roots ("" = none).', format: String, default: '' },
  },
  limits: {
    maxBodyBytes: { doc: 'Largest request body; larger gets 413.', format: nat, default: 10 * 1024 * 1024 },
    postBudgetBytes: { doc: 'Sum of declared sizes of all request bodies in flight at once; past it, 413.', format: nat, default: 256 * 1024 * 1024 },
    maxHeaderCount: { doc: 'Most request header lines; more gets 431.', format: nat, default: 100 },
    maxHeaderBytes: { doc: 'Largest request head in bytes (the request line and header lines as written with one space after each colon, line ends included; blanks around a value are not counted); larger gets 431. Changing it needs a restart.', format: nat, default: 16384 },
    headerTimeoutMs: { doc: 'Deadline to receive the whole request head.', format: nat, default: 10000 },
    requestTimeoutMs: { doc: 'Deadline to receive the whole request (head and body).', format: nat, default: 120000 },
    idleTimeoutMs: { doc: 'Idle client keep-alive connections are closed after this.', format: nat, default: 5000 },
    minBodyRateBytesPerSec: { doc: 'Slowest accepted request-body rate (after the grace period); slower is cut (408).', format: nat, default: 1024 },
    minBodyRateGraceMs: { doc: 'Time before the minimum body rate is enforced.', format: nat, default: 5000 },
    sendTimeoutMs: { doc: 'A client that takes no byte of its response for this long is disconnected (nginx\'s send_timeout), and its source gets a "slow" signal. At least 1.', format: nat, default: 60000 },
    maxConnectionsPerSource: { doc: 'Concurrent client connections per source address (IPv6 per /64), times the people seen behind it (filter.nat); at the cap its idle keep-alive connections are closed before a new one is refused.', format: nat, default: 64 },
    maxInflightPerSource: { doc: 'Requests from one source (IPv6 per /64) in flight to the upstream at once, times the people seen behind it (filter.nat); past it the proxy answers 503 (X-Scrubber: overloaded, Retry-After: 1), or 429 to a request the challenge policy exempts. 0 = no cap.', format: nat, default: 24 },
    bufferBodyBytes: { doc: 'Request bodies are read at the edge, up to this many bytes, before the request goes upstream (a slow POST then holds no upstream slot); a longer body streams on after them. 0 = stream at once.', format: nat, default: 1024 * 1024 },
    queueTimeoutMs: { doc: 'Longest wait in a domain\'s upstream queue (for its limit, or for a free upstream connection); then 503 (X-Scrubber: queue-timeout).', format: nat, default: 5000 },
    maxQueued: { doc: 'Most requests waiting in one domain\'s upstream queue; past it the worst-ranked waiter (or the newcomer) gets 503 (X-Scrubber: queue-full).', format: nat, default: 10000 },
    adaptive: {
      enabled: { doc: 'Each domain\'s upstream concurrency limit is learned from the origin\'s latency (domains[].maxInflight, when set, is its ceiling); requests beyond it wait in the fair queue. false: only domains with maxInflight are capped, at exactly that (upstream.maxConnections still bounds every domain).', format: Boolean, default: true },
      initialLimit: { doc: 'Adaptive limit: requests in flight allowed to a domain\'s upstreams before anything is learned.', format: nat, default: 20 },
      minLimit: { doc: 'Adaptive limit: it never goes below this (an origin is never starved to fewer requests at once).', format: nat, default: 8 },
    },
  },
  pages: {
    dir: { doc: 'Folder of proxy-generated pages (502.html, 503.html, 504.html, maintenance.html, cookies-needed.html, <domain>/<status>.html).', format: String, default: 'errors-pages' },
    brand: { doc: 'Brand named on the proxy-generated pages ("HTTP QRATOR 502").', format: String, default: 'QRATOR' },
  },
  filter: {
    mode: { doc: 'auto: block only while a domain is under attack; always: block whenever a source crosses the line; off: observe only.', format: ['auto', 'always', 'off'], default: 'auto' },
    rules: {
      doc: 'Detector rules, one leaky bucket per source each: [{name, label, on (event), capacity, leakPerSecond, banSeconds, weight, enforce: "attack"|"always"}] (see README for the events).',
      format: 'json-array',
      default: DEFAULT_RULES,
    },
    scoreThreshold: { doc: 'A source whose combined score (sum of rule weight x bucket fill) reaches this is banned, even with every bucket under capacity.', format: Number, default: 1 },
    whitelist: { doc: 'Addresses or CIDR ranges (no broader than /16 IPv4, /48 IPv6) never blocked nor challenged.', format: 'json-array', default: [] },
    maxSources: { doc: 'Most sources remembered at once (least recently seen go first): bounds the filter memory (about 200 bytes each, allocated as sources arrive).', format: nat, default: 100000 },
    maxBans: { doc: 'Most bans held at once (about 300 bytes each): past it, the bans that would end soonest are lifted early, automatic before manual, so that a flood of ever new sources (IPv6 /64s) cannot grow memory without end. Each node applies it to the bans it holds, and with workers each process holds them all: the memory is per process.', format: nat, default: 500000 },
    timeScale: { doc: 'Multiplies ban times (after clamping to 5 min..8 h), trust time and offender decay; 1 in production, small in tests and labs.', format: Number, default: 1 },
    repeatGrowth: { doc: 'A repeat offender\'s ban time is multiplied by this for each earlier (decayed) ban.', format: Number, default: 2 },
    repeatHalfLifeHours: { doc: 'An offender\'s count of earlier bans halves every this many hours.', format: Number, default: 24 },
    challenge: {
      enabled: { doc: 'While a domain is under attack (or mode always), untrusted sources get a 302 that sets a signed cookie before they reach the upstream.', format: Boolean, default: true },
      cookieName: { doc: 'Name of the challenge cookie (over HTTPS the proxy names it __Secure-<name>; a name with the __Host- or __Secure- prefix is refused: browsers drop it over plain HTTP).', format: String, default: 'scrubber_trust' },
      trustSeconds: { doc: 'How long a client that returned the cookie passes without a new challenge (also the cookie lifetime). The cookie is bound to the domain and a client id, not to the address: it survives a NAT pool, a network change, IPv4 and IPv6.', format: nat, default: 3600 },
      maxNetworksPerToken: { doc: 'A challenge cookie used from more distinct networks (IPv4 /24, IPv6 /48) than this has been copied: it is no longer honoured anywhere.', format: nat, default: 4 },
    },
    nat: {
      sessionCookies: { doc: 'Cookies whose distinct values count the people behind one address (with the distinct challenge cookies); per-source caps and rule allowances grow with them. [] = only challenge cookies.', format: 'json-array', default: DEFAULT_SESSION_COOKIES },
      maxFactor: { doc: 'Most the per-source caps (connections, requests in flight) and rule allowances are multiplied by, for the people seen behind one address.', format: nat, default: 32 },
      cookieMaxFactor: { doc: 'Most the site\'s own session cookies alone (unverifiable: a client can make them up) may multiply them by; challenge cookies are signed and count up to maxFactor.', format: nat, default: 8 },
    },
    fairShare: {
      enabled: { doc: 'While a domain\'s origin is saturated, a source using many times the origin time of a typical source waits behind the others in the upstream queue, and one that keeps at it is banned (rule "fair-share").', format: Boolean, default: true },
      overShareRatio: { doc: 'Fair share: a source over this multiple of the typical source\'s origin time (last 20 s) is over its share; at half of it, it loses its place among sources with a history.', format: Number, default: 4 },
      banAfterSeconds: { doc: 'Fair share: a source over its share this long while the origin stays saturated is banned (in auto mode: while the domain is under attack). Longer than the share\'s 20 s window by default: one burst of expensive requests stays in the window that long.', format: nat, default: 25 },
      newcomerSources: { doc: 'Under attack, all sources without a history (a rotating flood cannot be judged one by one) share one slice of the origin: the origin time this many sources may take at the fair-share line (overShareRatio × the typical source\'s); beyond it they are refused (429 for a request exempt from the challenge). With workers each worker gives its newcomers its share of it.', format: Number, default: 1 },
    },
    attack: {
      minRps: { doc: 'Attack mode (auto): a domain below this many requests/s is never under attack by rate.', format: Number, default: 20 },
      rateFactor: { doc: 'Attack mode: request rate above this multiple of the learned baseline is a sign of attack.', format: Number, default: 4 },
      latencyFactor: { doc: 'Attack mode: the median upstream latency of a second above this multiple of the baseline (and above minLatencyMs) is a sign of attack.', format: Number, default: 4 },
      minLatencyMs: { doc: 'Attack mode: upstream latency below this is never a sign of attack by latency alone (a saturated origin is judged against its own unloaded latency by the adaptive limit, whatever this).', format: nat, default: 500 },
      errorRatio: { doc: 'Attack mode: share of requests failing upstream (502/503/504, timeouts, refused, queue refusals; at least 3 in a second), or answered 500 above the learned usual share of them, that is a sign of attack; with limits.adaptive off, also the share waiting in a fixed maxInflight queue. A healthy origin fails far below 1%; one in ten is an origin overloaded or broken.', format: Number, default: 0.1 },
      enterSeconds: { doc: 'Attack mode starts after this many consecutive seconds with a sign of attack.', format: nat, default: 2 },
      exitSeconds: { doc: 'Attack mode ends after this many consecutive calm seconds.', format: nat, default: 60 },
      learnSeconds: { doc: 'Time constant of the learned baseline (rate, latency); the first min(learnSeconds, 30) s only learn.', format: nat, default: 300 },
      tighten: { doc: 'While the upstream fails (or its queue is crowded) in an attack, the score line is multiplied by this (the filter tightens).', format: Number, default: 0.6 },
      suspects: { doc: 'When the upstream starts failing (or its queue is crowded) in an attack, up to this many of the most suspicious sources of the domain are banned at once.', format: nat, default: 20 },
    },
  },
  state: {
    dir: { doc: 'Folder of the embedded store (node:sqlite).', format: String, default: 'data' },
    redis: {
      url: { doc: 'Redis URL (redis:// or rediss://) through which nodes share bans, the whitelist, attack state, the challenge secret and the TLS session ticket key ("" = run alone on the embedded store).', format: String, default: '' },
      prefix: { doc: 'Prefix of every key and pub/sub channel of this cluster in Redis: clusters sharing one Redis server keep apart by prefix, or by database (the URL\'s /N; the channels, global to a server, carry it). 1 to 64 printable characters, no blanks. Changing it needs a restart.', format: String, default: 'scrubber:' },
    },
  },
  stats: {
    flushIntervalMs: { doc: 'How often counted statistics are written to the embedded store (and on shutdown). Changing it needs a restart.', format: 'nat', default: 5000 },
    retentionDays: { doc: 'How long 3-minute statistics buckets are kept (at least 13 months for billing disputes).', format: 'nat', default: 430 },
  },
  shutdown: {
    drainTimeoutMs: { doc: 'On SIGTERM/SIGINT, how long in-flight requests may take to finish.', format: nat, default: 10000 },
  },
  log: {
    level: { doc: 'pino log level; a reload applies it at once (every worker too).', format: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
  },
  workers: { doc: 'Worker processes, 1 to 1024: the primary accepts connections and hands each source to one of them (1 = one process, as the tests that start the app in-process run).', format: int, default: os.availableParallelism() },
  workerWatchdogMs: { doc: 'A worker not heard from for this long (its event loop stopped turning: it reports every second) is killed and replaced; 0: never. At least 2000 otherwise.', format: nat, default: 10000 },
  demo: {
    enabled: { doc: 'Start the bundled demo origin (for npm start). Changing demo.* needs a restart.', format: Boolean, default: false },
    host: { doc: 'Demo origin address.', format: String, default: '127.0.0.1' },
    port: { doc: 'Demo origin port.', format: 'port', default: 8081 },
  },
  domains: {
    doc: 'Protected sites: [{name, aliases, upstreams, backup, healthCheck, maintenance, ...}] (see README).',
    format: 'json-array',
    default: [],
  },
} as const;

// Defaults for the fields of a domain entry; validate.ts fills them in.
export const domainDefaults = {
  aliases: [] as string[],
  backup: [] as string[],
  upstreamTls: false,
  proxyErrorPages: false,
  maxInflight: 0,
  challenge: true,
  challengePolicy: [],
  passthrough: false,
  proxyProtocol: 'none',
  healthCheck: { type: 'tcp', path: '/', intervalMs: 120000, timeoutMs: 5000, fall: 3, rise: 2 },
  maintenance: { enabled: false, redirect: null, retryAfterSeconds: 600 },
} as const;

export const MAX_UPSTREAMS = 16;
/** More worker processes than any one machine has cores (one per core is the point). */
export const MAX_WORKERS = 1024;
