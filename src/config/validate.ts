// Pure checks of the structured parts of the config (arrays of objects that
// convict does not look into). Each problem is one line naming the key, e.g.
// `domains[1].upstreams: 17 upstreams, at most 16`. Defaults are filled in so
// the rest of the program sees complete objects.
import { validateChallengePolicy, type ChallengeRule } from '../challenge/policy.ts';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { domainToASCII } from 'node:url';
import { validateFilterConfig } from '../detect/config.ts';
import { parseDuration } from './units.ts';
import { canonicalHost } from '../route/router.ts';
import { domainDefaults, MAX_UPSTREAMS, MAX_WORKERS, type Config, type DomainConfig, type HostPort } from './schema.ts';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function unknownKeys(o: Obj, allowed: readonly string[], at: string, problems: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) problems.push(`${at}.${k}: unknown key`);
}

const HOSTNAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

export function isValidHostname(h: string): boolean {
  return HOSTNAME.test(h) || net.isIP(h) !== 0;
}

/** "host:port" or "[v6]:port" → {host, port}, or null when malformed. */
export function parseHostPort(s: string): HostPort | null {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\s[\]]+):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  if (!isValidHostname(m[1])) return null;
  return { host: m[1], port };
}

function checkListeners(v: unknown, at: string, problems: string[]): void {
  if (!Array.isArray(v)) { problems.push(`${at}: must be an array of {host, port}`); return; }
  v.forEach((l, i) => {
    const k = `${at}[${i}]`;
    if (!isObj(l)) { problems.push(`${k}: must be an object {host, port}`); return; }
    unknownKeys(l, ['host', 'port'], k, problems);
    if (typeof l.host !== 'string' || !isValidHostname(l.host)) problems.push(`${k}.host: must be an address or host name`);
    if (!Number.isInteger(l.port) || (l.port as number) < 0 || (l.port as number) > 65535) problems.push(`${k}.port: must be an integer 0..65535`);
  });
}

function checkUpstreamList(v: unknown, k: string, min: number, problems: string[]): void {
  if (!Array.isArray(v)) { problems.push(`${k}: must be an array of "host:port"`); return; }
  if (v.length < min) problems.push(`${k}: ${v.length} upstreams, at least ${min}`);
  if (v.length > MAX_UPSTREAMS) problems.push(`${k}: ${v.length} upstreams, at most ${MAX_UPSTREAMS}`);
  v.forEach((u, i) => {
    if (typeof u !== 'string' || !parseHostPort(u)) problems.push(`${k}[${i}]: ${JSON.stringify(u)} is not "host:port"`);
  });
}

const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;

function checkDomain(d: unknown, i: number, names: Map<string, string>, problems: string[]): DomainConfig | null {
  const at = `domains[${i}]`;
  if (!isObj(d)) { problems.push(`${at}: must be an object`); return null; }
  unknownKeys(d, ['name', 'aliases', 'upstreams', 'backup', 'upstreamTls', 'healthCheck', 'maintenance', 'proxyErrorPages', 'maxInflight', 'challenge', 'challengePolicy', 'passthrough', 'proxyProtocol'], at, problems);
  const start = problems.length;
  if (typeof d.name !== 'string' || !HOSTNAME.test(d.name) && net.isIP(d.name) === 0) problems.push(`${at}.name: must be a host name`);
  const aliases = d.aliases ?? [];
  if (!Array.isArray(aliases) || aliases.some((a) => typeof a !== 'string' || !isValidHostname(a))) problems.push(`${at}.aliases: must be an array of host names`);
  checkUpstreamList(d.upstreams, `${at}.upstreams`, 1, problems);
  if (d.backup !== undefined) checkUpstreamList(d.backup, `${at}.backup`, 0, problems);
  if (d.upstreamTls !== undefined && typeof d.upstreamTls !== 'boolean') problems.push(`${at}.upstreamTls: must be true or false`);
  if (d.proxyErrorPages !== undefined && typeof d.proxyErrorPages !== 'boolean') problems.push(`${at}.proxyErrorPages: must be true or false`);
  if (d.challenge !== undefined && typeof d.challenge !== 'boolean') problems.push(`${at}.challenge: must be true or false`);
  if (d.challengePolicy !== undefined) problems.push(...validateChallengePolicy(d.challengePolicy, `${at}.challengePolicy`));
  if (d.passthrough !== undefined && typeof d.passthrough !== 'boolean') problems.push(`${at}.passthrough: must be true or false`);
  if (d.proxyProtocol !== undefined && d.proxyProtocol !== 'none' && d.proxyProtocol !== 'v2') problems.push(`${at}.proxyProtocol: must be "none" or "v2"`);
  if (d.proxyProtocol === 'v2' && d.passthrough !== true) problems.push(`${at}.proxyProtocol: only for passthrough domains`);
  if (d.passthrough === true && isObj(d.healthCheck) && d.healthCheck.type === 'http') problems.push(`${at}.healthCheck.type: a passthrough domain's upstreams speak TLS: tcp or https`);
  if (d.maxInflight !== undefined && !(Number.isInteger(d.maxInflight) && (d.maxInflight as number) >= 0)) problems.push(`${at}.maxInflight: must be a whole number >= 0 (0 = no cap)`);

  const hc = { ...domainDefaults.healthCheck } as Obj;
  if (d.healthCheck !== undefined) {
    if (!isObj(d.healthCheck)) problems.push(`${at}.healthCheck: must be an object`);
    else {
      unknownKeys(d.healthCheck, Object.keys(domainDefaults.healthCheck), `${at}.healthCheck`, problems);
      Object.assign(hc, d.healthCheck);
      if (!['tcp', 'http', 'https'].includes(hc.type as string)) problems.push(`${at}.healthCheck.type: must be tcp, http or https`);
      if (typeof hc.path !== 'string' || !(hc.path as string).startsWith('/')) problems.push(`${at}.healthCheck.path: must start with /`);
      // Durations here take units as the top-level keys do ("2 minutes", "5s").
      for (const f of ['intervalMs', 'timeoutMs']) {
        const r = parseDuration(hc[f], 'ms');
        if (r.ok && r.value > 0) hc[f] = r.value;
        else problems.push(`${at}.healthCheck.${f}: ${r.ok ? 'must be at least 1' : r.why}`);
      }
      for (const f of ['fall', 'rise']) if (!posInt(hc[f])) problems.push(`${at}.healthCheck.${f}: must be a positive integer`);
    }
  }
  const mt = { ...domainDefaults.maintenance } as Obj;
  if (d.maintenance !== undefined) {
    if (!isObj(d.maintenance)) problems.push(`${at}.maintenance: must be an object`);
    else {
      unknownKeys(d.maintenance, Object.keys(domainDefaults.maintenance), `${at}.maintenance`, problems);
      Object.assign(mt, d.maintenance);
      if (typeof mt.enabled !== 'boolean') problems.push(`${at}.maintenance.enabled: must be true or false`);
      if (mt.redirect !== null && (typeof mt.redirect !== 'string' || !/^https?:\/\/\S+$/.test(mt.redirect as string))) problems.push(`${at}.maintenance.redirect: must be null or an http(s) URL`);
      const ra = parseDuration(mt.retryAfterSeconds, 's');
      if (ra.ok && ra.value > 0) mt.retryAfterSeconds = ra.value;
      else problems.push(`${at}.maintenance.retryAfterSeconds: ${ra.ok ? 'must be at least 1' : ra.why}`);
    }
  }
  // Names are claimed even by an entry with other problems, so that fixing those does not reveal a clash only later.
  const hosts = [d.name, ...(Array.isArray(aliases) ? aliases : [])].filter((h): h is string => typeof h === 'string' && isValidHostname(h));
  for (const h of hosts) {
    const key = canonicalHost(h);
    const prev = names.get(key);
    if (prev) problems.push(`${at}: host ${key} is already used by ${prev}`);
    else names.set(key, at);
  }
  if (problems.length > start) return null;
  return {
    name: (d.name as string).toLowerCase(),
    aliases: (aliases as string[]).map((a) => a.toLowerCase()),
    upstreams: d.upstreams as string[],
    backup: (d.backup as string[] | undefined) ?? [],
    upstreamTls: (d.upstreamTls as boolean | undefined) ?? hc.type === 'https',
    proxyErrorPages: (d.proxyErrorPages as boolean | undefined) ?? false,
    maxInflight: (d.maxInflight as number | undefined) ?? 0,
    challenge: (d.challenge as boolean | undefined) ?? true,
    challengePolicy: (d.challengePolicy as ChallengeRule[] | undefined) ?? [],
    passthrough: (d.passthrough as boolean | undefined) ?? false,
    proxyProtocol: (d.proxyProtocol as 'none' | 'v2' | undefined) ?? 'none',
    healthCheck: hc as unknown as DomainConfig['healthCheck'],
    maintenance: mt as unknown as DomainConfig['maintenance'],
  };
}

/** A file the proxy reads whole (a CA bundle, a certificate, a key): access() alone passes a directory (and a FIFO
 *  or a device), which readFileSync then fails on (EISDIR) or hangs on, mid-reload or mid-start. */
const readableFile = (f: string) => {
  try { fs.accessSync(f, fs.constants.R_OK); return fs.statSync(f).isFile(); } catch { return false; }
};

/** Readable files Node still cannot use (not PEM, a key of another certificate) passed `check` and failed only at
 *  the start ("cannot start: PEM routines::no start line", naming no file) or at a reload: tried here as the
 *  listeners will use them. */
function checkCertPair(c: { cert: string; key: string }, at: string, problems: string[]): void {
  try { tls.createSecureContext({ cert: fs.readFileSync(c.cert), key: fs.readFileSync(c.key) }); } catch (e) {
    problems.push(`${at}: ${c.cert} and ${c.key} are not a usable certificate and its key (PEM): ${(e as Error).message}`);
  }
}

/** Node ignores what in a CA bundle is not a certificate: a wrong file was taken silently, and every HTTPS upstream
 *  signed by the CA meant then failed verification. */
function checkCaFile(file: string, problems: string[]): void {
  try {
    const text = fs.readFileSync(file, 'utf8');
    if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate');
    new crypto.X509Certificate(text);
  } catch {
    problems.push(`upstream.caFile: ${file} holds no PEM certificate`);
  }
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/**
 * Only addresses that cannot leave the machine, and the name "localhost"
 * (resolved from /etc/hosts, RFC 6761). Any other name may resolve anywhere:
 * "127.evil.example" is a host name, not 127.0.0.0/8.
 */
export function isLoopbackHost(h: string): boolean {
  if (h.toLowerCase() === 'localhost') return true;
  const v = h.replace(/^\[(.*)\]$/, '$1');
  const family = net.isIP(v);
  return family !== 0 && LOOPBACK.check(v, family === 4 ? 'ipv4' : 'ipv6');
}

/** The addresses a host binds; a wildcard binds its whole family (and "::" both, dual-stack as Node binds it). */
function bindScope(host: string): { all: 4 | 6 | 0; addrs: string[] } {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === '0.0.0.0') return { all: 4, addrs: [] };
  if (h === '::' || h === '') return { all: 6, addrs: [] };
  if (h === 'localhost') return { all: 0, addrs: ['127.0.0.1', '::1'] };
  if (net.isIPv6(h)) {
    // An IPv4-mapped address (::ffff:127.0.0.1) is the IPv4 socket address: both binds would clash.
    const a = new net.SocketAddress({ address: h, family: 'ipv6' }).address, v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
    return { all: 0, addrs: [v4 ? v4[1] : a] };
  }
  return { all: 0, addrs: [h] };
}

function sameBind(a: string, b: string): boolean {
  const x = bindScope(a);
  const y = bindScope(b);
  if (x.all === 6 || y.all === 6) return true;
  const inV4 = (s: { addrs: string[] }) => s.addrs.some((h) => net.isIPv4(h));
  if (x.all === 4) return y.all === 4 || inV4(y);
  if (y.all === 4) return inV4(x);
  return x.addrs.some((h) => y.addrs.includes(h));
}

/** Two sockets on one address and port cannot both bind: refused here rather than by EADDRINUSE at start. */
function checkBindClashes(cfg: Config, problems: string[]): void {
  const binds: { at: string; host: string; port: number }[] = [];
  const add = (at: string, l: unknown) => {
    if (isObj(l) && typeof l.host === 'string' && Number.isInteger(l.port) && (l.port as number) > 0) binds.push({ at, host: l.host, port: l.port as number });
  };
  if (Array.isArray(cfg.listen)) cfg.listen.forEach((l, i) => add(`listen[${i}]`, l));
  if (Array.isArray(cfg.tls.listen)) cfg.tls.listen.forEach((l, i) => add(`tls.listen[${i}]`, l));
  add('admin', cfg.admin);
  if (cfg.demo.enabled) add('demo', cfg.demo);
  binds.forEach((b, i) => {
    const prev = binds.slice(0, i).find((p) => p.port === b.port && sameBind(p.host, b.host));
    if (!prev) return;
    const where = prev.host === b.host ? '' : ` (${prev.host}:${prev.port})`;
    problems.push(`${b.at}: ${b.host}:${b.port} is already used by ${prev.at}${where}`);
  });
}

/** Checks and completes the structured parts in place; returns the problems. */
export function validateStructure(cfg: Config): string[] {
  const problems: string[] = [];
  checkListeners(cfg.listen, 'listen', problems);
  checkListeners(cfg.tls.listen, 'tls.listen', problems);
  if (!Array.isArray(cfg.tls.certs)) problems.push('tls.certs: must be an array');
  else cfg.tls.certs.forEach((c, i) => {
    const at = `tls.certs[${i}]`;
    if (!isObj(c)) { problems.push(`${at}: must be an object {domains, cert, key}`); return; }
    unknownKeys(c, ['domains', 'cert', 'key'], at, problems);
    if (!Array.isArray(c.domains) || c.domains.length === 0 || c.domains.some((d) => typeof d !== 'string')) problems.push(`${at}.domains: must be a non-empty array of host names`);
    // Matched against the name a client sends (SNI: an A-label, no port): a name that can never be sent was accepted and
    // never matched, and its clients got another site's certificate.
    else for (const d of c.domains as string[]) if (!HOSTNAME.test(d.startsWith('*.') ? d.slice(2) : d)) {
      const ascii = domainToASCII(d.startsWith('*.') ? d.slice(2) : d);
      problems.push(`${at}.domains: ${JSON.stringify(d)} is not a host name${ascii && HOSTNAME.test(ascii) ? ` (write it as DNS has it: "${d.startsWith('*.') ? '*.' : ''}${ascii}")` : ''}`);
    }
    if (typeof c.cert !== 'string' || !c.cert) problems.push(`${at}.cert: must be a file path`);
    if (typeof c.key !== 'string' || !c.key) problems.push(`${at}.key: must be a file path`);
  });
  // A listener that only passes TLS through needs no certificate of its own.
  const onlyPassthrough = Array.isArray(cfg.domains) && cfg.domains.length > 0 && cfg.domains.every((d) => isObj(d) && d.passthrough === true);
  if (cfg.tls.listen.length > 0 && cfg.tls.certs.length === 0 && !onlyPassthrough) problems.push('tls.certs: HTTPS listeners need at least one certificate');
  if (cfg.listen.length === 0 && cfg.tls.listen.length === 0) problems.push('listen: no listener configured');
  checkBindClashes(cfg, problems);
  // Each of these makes every request fail (0 headers allowed) or removes a deadline Node treats 0 as "none" for.
  for (const k of ['maxHeaderCount', 'maxHeaderBytes', 'headerTimeoutMs', 'requestTimeoutMs', 'idleTimeoutMs', 'sendTimeoutMs'] as const) {
    if (cfg.limits[k] === 0) problems.push(`limits.${k}: must be at least 1`);
  }
  // No room for a ban would lift each at once: the filter would ban and forget in the same breath.
  if (cfg.filter.maxBans === 0) problems.push('filter.maxBans: must be at least 1');
  const ad = cfg.limits.adaptive;
  if (ad.minLimit < 1) problems.push('limits.adaptive.minLimit: must be at least 1');
  if (ad.initialLimit < ad.minLimit) problems.push(`limits.adaptive.initialLimit: must be at least limits.adaptive.minLimit (${ad.minLimit})`);
  if (cfg.limits.headerTimeoutMs > cfg.limits.requestTimeoutMs) problems.push(`limits.headerTimeoutMs: must not exceed limits.requestTimeoutMs (${cfg.limits.requestTimeoutMs})`);
  // Listened on as written: "[::1]" (brackets) is no host the listener can resolve, and the start would fail naming no key.
  for (const [k, h] of [['admin.host', cfg.admin.host], ['demo.host', cfg.demo.host]] as const) {
    if (typeof h === 'string' && !isValidHostname(h)) problems.push(`${k}: must be an address or host name (an IPv6 address without brackets, e.g. ::1)`);
  }
  if (typeof cfg.admin.host === 'string' && !isLoopbackHost(cfg.admin.host) && !cfg.admin.token) problems.push(`admin.token: required when admin.host (${cfg.admin.host}) is not loopback`);
  // Node reads header bytes as Latin-1 and browsers refuse to send other characters, and a space at either end is
  // cut from the header: a token with any of them could never match. The value is a secret: not repeated here.
  if (typeof cfg.admin.token === 'string' && !/^[\x21-\x7E]*$/.test(cfg.admin.token)) {
    problems.push('admin.token: only visible ASCII characters are allowed (0x21-0x7E: letters, digits, punctuation; no spaces or other characters), as only those can be sent in an Authorization header');
  }
  if (cfg.upstream.caFile && !readableFile(cfg.upstream.caFile)) problems.push(`upstream.caFile: ${cfg.upstream.caFile} is not a readable file`);
  else if (cfg.upstream.caFile) checkCaFile(cfg.upstream.caFile, problems);
  for (const [i, c] of (Array.isArray(cfg.tls.certs) ? cfg.tls.certs : []).entries()) {
    let readable = isObj(c);
    for (const k of ['cert', 'key'] as const) if (typeof c?.[k] === 'string' && c[k] && !readableFile(c[k])) { readable = false; problems.push(`tls.certs[${i}].${k}: ${c[k]} is not a readable file`); }
    if (readable && typeof c.cert === 'string' && c.cert && typeof c.key === 'string' && c.key) checkCertPair(c, `tls.certs[${i}]`, problems);
  }
  if (!cfg.state.dir.trim()) problems.push('state.dir: must name a folder (it was empty: the store has nowhere to go)');
  if (cfg.state.redis.url) { const p = redisUrlProblem(cfg.state.redis.url); if (p) problems.push(`state.redis.url: ${JSON.stringify(cfg.state.redis.url)} ${p}`); }
  if (!/^[\x21-\x7e]{1,64}$/.test(cfg.state.redis.prefix)) problems.push(`state.redis.prefix: ${JSON.stringify(cfg.state.redis.prefix)} must be 1 to 64 printable characters without blanks`);
  // 0 or below used to run one process without a word, as if 1 was meant; a typo of 1000 would fork a thousand.
  if (cfg.workers < 1) problems.push(`workers: must be at least 1 (was ${cfg.workers})`);
  else if (cfg.workers > MAX_WORKERS) problems.push(`workers: at most ${MAX_WORKERS} (one process per core; was ${cfg.workers})`);
  // A worker reports every second: less than two of those would kill one that is merely busy.
  if (cfg.workerWatchdogMs > 0 && cfg.workerWatchdogMs < 2000) problems.push(`workerWatchdogMs: 0 (never) or at least 2000 (was ${cfg.workerWatchdogMs})`);
  if (cfg.stats.flushIntervalMs < 100) problems.push('stats.flushIntervalMs: must be at least 100');
  if (cfg.tls.handshakeTimeoutMs < 1) problems.push('tls.handshakeTimeoutMs: must be at least 1 (0 would leave TLS handshakes without a deadline)');
  if (cfg.tls.ticketKeyRotateSeconds < 60) problems.push(`tls.ticketKeyRotateSeconds: must be at least 60 (was ${cfg.tls.ticketKeyRotateSeconds})`);
  if (cfg.stats.retentionDays < 1) problems.push('stats.retentionDays: must be at least 1');
  if (cfg.upstream.connectAttempts < 1) problems.push('upstream.connectAttempts: must be at least 1');
  if (cfg.upstream.connectTimeoutMs === 0) problems.push('upstream.connectTimeoutMs: must be at least 1');
  if (cfg.upstream.responseTimeoutMs === 0) problems.push('upstream.responseTimeoutMs: must be at least 1');
  problems.push(...validateFilterConfig(cfg.filter));
  if (!Array.isArray(cfg.domains)) { problems.push('domains: must be an array'); return problems; }
  const names = new Map<string, string>();
  const domains = cfg.domains.map((d, i) => checkDomain(d, i, names, problems));
  if (!problems.length) cfg.domains = domains as DomainConfig[];
  const passthrough = cfg.domains.findIndex((d) => (d as DomainConfig | null)?.passthrough === true);
  if (passthrough >= 0 && cfg.tls.listen.length === 0) problems.push(`domains[${passthrough}].passthrough: needs a TLS listener (tls.listen)`);
  return problems;
}

/** What is wrong with a Redis URL, or null. The client would take a port past 65535 as "Invalid URL" at start (naming
 *  no key), and a database that is not a number as SELECT NaN, which Redis refuses after the connection is made. */
export function redisUrlProblem(url: string): string | null {
  if (!/^rediss?:\/\/[^\s]+$/.test(url)) return 'is not a redis:// or rediss:// URL';
  let u: URL;
  try { u = new URL(url); } catch { return 'is not a valid URL (a port is 1-65535)'; }
  if (!u.hostname) return 'names no host';
  if (!/^(\/(\d{1,5})?)?$/.test(u.pathname)) return `names a database that is not a number (${JSON.stringify(u.pathname.slice(1))}: redis://host:port/0 to /15 by default)`;
  return null;
}

