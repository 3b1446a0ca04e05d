// The config schema: every key, its type, default and meaning, in one place.
// convict reads it (defaults, types, SCRUBBER_* environment overrides);
// the structured parts (listeners, domains, certificates) are checked element
// by element in validate.ts, because convict does not look inside arrays.
import os from 'node:os';

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
}

export interface Config {
  listen: HostPort[];
  tls: { listen: HostPort[]; certs: { domains: string[]; cert: string; key: string }[] };
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
    maxConnectionsPerSource: number;
  };
  pages: { dir: string; brand: string };
  filter: Record<string, unknown> & { mode: 'auto' | 'always' | 'off' };
  state: { dir: string; redis: { url: string } };
  shutdown: { drainTimeoutMs: number };
  log: { level: string };
  workers: number;
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
  },
  admin: {
    host: { doc: 'Admin API / dashboard address. A non-loopback host needs a token.', format: String, default: '127.0.0.1' },
    port: { doc: 'Admin API / dashboard port (0 = any free port).', format: 'port', default: 9090 },
    token: { doc: 'Bearer token for the admin API ("" = no auth, loopback only).', format: String, default: '', sensitive: true },
  },
  upstream: {
    connectTimeoutMs: { doc: 'How long one connect attempt waits for the upstream to accept.', format: nat, default: 9000 },
    connectAttempts: { doc: 'Connect attempts per upstream after timeouts, before failing over.', format: nat, default: 2 },
    responseTimeoutMs: { doc: 'Time for the upstream to send response headers; then 504.', format: nat, default: 60000 },
    bodyTimeoutMs: { doc: 'Longest pause between two chunks of an upstream response body.', format: nat, default: 300000 },
    maxConnections: { doc: 'Connection cap per upstream server (0 = unlimited).', format: nat, default: 256 },
    keepAliveTimeoutMs: { doc: 'Idle upstream keep-alive connections are closed after this.', format: nat, default: 4000 },
    rejectUnauthorized: { doc: 'Verify certificates of HTTPS upstreams.', format: Boolean, default: true },
    caFile: { doc: 'Extra CA bundle (PEM file) trusted for HTTPS upstreams, besides the system roots ("" = none).', format: String, default: '' },
  },
  limits: {
    maxBodyBytes: { doc: 'Largest request body; larger gets 413.', format: nat, default: 10 * 1024 * 1024 },
    postBudgetBytes: { doc: 'Sum of declared sizes of all request bodies in flight at once; past it, 413.', format: nat, default: 256 * 1024 * 1024 },
    maxHeaderCount: { doc: 'Most request header lines; more gets 431.', format: nat, default: 100 },
    maxHeaderBytes: { doc: 'Largest request head in bytes; larger gets 431.', format: nat, default: 16384 },
    headerTimeoutMs: { doc: 'Deadline to receive the whole request head.', format: nat, default: 10000 },
    requestTimeoutMs: { doc: 'Deadline to receive the whole request (head and body).', format: nat, default: 120000 },
    idleTimeoutMs: { doc: 'Idle client keep-alive connections are closed after this.', format: nat, default: 5000 },
    minBodyRateBytesPerSec: { doc: 'Slowest accepted request-body rate (after the grace period); slower is cut (408).', format: nat, default: 1024 },
    minBodyRateGraceMs: { doc: 'Time before the minimum body rate is enforced.', format: nat, default: 5000 },
    maxConnectionsPerSource: { doc: 'Concurrent client connections per source address (IPv6 per /64).', format: nat, default: 64 },
  },
  pages: {
    dir: { doc: 'Folder of proxy-generated pages (502.html, 503.html, 504.html, maintenance.html, <domain>/<status>.html).', format: String, default: 'errors-pages' },
    brand: { doc: 'Brand named on the proxy-generated pages ("HTTP QRATOR 502").', format: String, default: 'QRATOR' },
  },
  filter: {
    mode: { doc: 'auto: block only while a domain is under attack; always: block whenever a source crosses the line; off: observe only.', format: ['auto', 'always', 'off'], default: 'auto' },
  },
  state: {
    dir: { doc: 'Folder of the embedded store (node:sqlite).', format: String, default: 'data' },
    redis: {
      url: { doc: 'Redis URL for sharing decisions between nodes ("" = run alone).', format: String, default: '' },
    },
  },
  shutdown: {
    drainTimeoutMs: { doc: 'On SIGTERM/SIGINT, how long in-flight requests may take to finish.', format: nat, default: 10000 },
  },
  log: {
    level: { doc: 'pino log level.', format: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
  },
  workers: { doc: 'Worker processes (reserved; this version serves from one process).', format: int, default: os.availableParallelism() },
  demo: {
    enabled: { doc: 'Start the bundled demo origin (for npm start).', format: Boolean, default: false },
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
  healthCheck: { type: 'tcp', path: '/', intervalMs: 120000, timeoutMs: 5000, fall: 3, rise: 2 },
  maintenance: { enabled: false, redirect: null, retryAfterSeconds: 600 },
} as const;

export const MAX_UPSTREAMS = 16;
