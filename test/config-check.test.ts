// Black-box: `scrubber check` and a real start on configs that look fine and
// cannot work (issue 12, items 5 and 9). Sizes and durations may carry units
// ("10MB", "10s", "1 minute") and mean what they say; anything that does not
// parse, or is out of bounds, is refused with the key named, from the file and
// from the environment alike, by `check` and by startup alike.
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { loadConfigObject } from '../src/config/load.ts';
import { tempDir } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');
const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] };

function writeConfig(config: unknown): string {
  const file = path.join(tempDir(), 'c.json');
  fs.writeFileSync(file, JSON.stringify(config));
  return file;
}

function check(config: unknown, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, 'check', '--config', writeConfig(config)], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, lines: r.stdout.trim().split('\n') };
}

/** The loaded value of a key, or the problems. */
function load(raw: Record<string, unknown>, env: Record<string, string> = {}) {
  const r = loadConfigObject({ ...ok, ...raw }, env);
  return r.ok ? { config: r.config, problems: [] as string[] } : { config: null, problems: r.problems };
}

describe('sizes and durations with units', () => {
  it('a size with a unit means that many bytes (SI and IEC), a duration that many ms', () => {
    const c = load({
      limits: { maxBodyBytes: '10MB', postBudgetBytes: '1 GiB', bufferBodyBytes: '64KiB', maxHeaderBytes: '16384', headerTimeoutMs: '10s', requestTimeoutMs: '2 minutes', idleTimeoutMs: '1500ms', minBodyRateGraceMs: '1m30s' },
      upstream: { responseTimeoutMs: '1 minute', keepAliveTimeoutMs: 4000 },
      filter: { challenge: { trustSeconds: '1h' } },
    }).config!;
    expect(c.limits.maxBodyBytes).toBe(10_000_000);
    expect(c.limits.postBudgetBytes).toBe(1024 ** 3);
    expect(c.limits.bufferBodyBytes).toBe(64 * 1024);
    expect(c.limits.maxHeaderBytes).toBe(16384);
    expect(c.limits.headerTimeoutMs).toBe(10_000);
    expect(c.limits.requestTimeoutMs).toBe(120_000);
    expect(c.limits.idleTimeoutMs).toBe(1500);
    expect(c.limits.minBodyRateGraceMs).toBe(90_000);
    expect(c.upstream.responseTimeoutMs).toBe(60_000);
    expect(c.upstream.keepAliveTimeoutMs).toBe(4000);
    expect(c.filter.challenge.trustSeconds).toBe(3600);
  });

  it('durations inside domain entries take units too, and refuse what does not parse', () => {
    const d = (extra: Record<string, unknown>) => ({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'], ...extra }] });
    const c = loadConfigObject(d({ healthCheck: { intervalMs: '2 minutes', timeoutMs: '5s' }, maintenance: { enabled: true, retryAfterSeconds: '10 min' } }), {});
    expect(c.ok && c.config.domains[0].healthCheck).toMatchObject({ intervalMs: 120_000, timeoutMs: 5000 });
    expect(c.ok && c.config.domains[0].maintenance.retryAfterSeconds).toBe(600);
    const bad = loadConfigObject(d({ healthCheck: { intervalMs: '2 moons', timeoutMs: 0 } }), {});
    expect(bad.ok ? [] : bad.problems).toEqual(expect.arrayContaining([
      expect.stringMatching(/^domains\[0\]\.healthCheck\.intervalMs: .*moons/), 'domains[0].healthCheck.timeoutMs: must be at least 1']));
  });

  it('the same from the environment', () => {
    const c = load({}, { SCRUBBER_LIMITS_MAX_BODY_BYTES: '10MiB', SCRUBBER_LIMITS_HEADER_TIMEOUT_MS: '10s', SCRUBBER_LIMITS_MAX_HEADER_COUNT: '50' }).config!;
    expect(c.limits.maxBodyBytes).toBe(10 * 1024 * 1024);
    expect(c.limits.headerTimeoutMs).toBe(10_000);
    expect(c.limits.maxHeaderCount).toBe(50);
  });

  it('refuses what does not parse, is ambiguous or out of bounds, naming the key (never truncates)', () => {
    const p = load({
      limits: { maxBodyBytes: '10 potatoes', postBudgetBytes: '10m', bufferBodyBytes: 1e20, maxHeaderCount: '10abc', headerTimeoutMs: 'soon', requestTimeoutMs: '1.5.2s', minBodyRateBytesPerSec: '1.5B' },
      upstream: { responseTimeoutMs: '30 days' },
      filter: { challenge: { trustSeconds: '1500ms' }, scoreThreshold: '0.5abc' },
      workers: '4x', admin: { port: '90x' },
    }).problems;
    for (const key of ['limits.maxBodyBytes', 'limits.postBudgetBytes', 'limits.bufferBodyBytes', 'limits.maxHeaderCount', 'limits.headerTimeoutMs',
      'limits.requestTimeoutMs', 'limits.minBodyRateBytesPerSec', 'upstream.responseTimeoutMs', 'filter.challenge.trustSeconds', 'filter.scoreThreshold', 'workers', 'admin.port']) {
      expect(p.some((l) => l.startsWith(`${key}:`)), `${key} in ${JSON.stringify(p)}`).toBe(true);
    }
    expect(p.find((l) => l.startsWith('limits.postBudgetBytes:'))).toMatch(/ambiguous/);
  });

  it('scrubber check and startup refuse "10MB"-style mistakes alike, from the file and the environment', async () => {
    const bad = { ...ok, limits: { maxBodyBytes: '10 megs' } };
    const r = check(bad);
    expect(r.code).toBe(2);
    expect(r.lines[0]).toMatch(/^limits\.maxBodyBytes: /);
    const e = check(ok, { SCRUBBER_UPSTREAM_RESPONSE_TIMEOUT_MS: '1 fortnight' });
    expect(e.code).toBe(2);
    expect(e.lines[0]).toMatch(/^upstream\.responseTimeoutMs: /);
    expect(check({ ...ok, limits: { maxBodyBytes: '10MB', headerTimeoutMs: '10s' } }).code).toBe(0);

    const child = spawn(process.execPath, [BIN, '--config', writeConfig({ ...bad, state: { dir: tempDir() } })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(err.trim().split('\n')[0]).toBe(r.lines[0]);
  });
});

describe('scrubber check refuses configs that cannot work', () => {
  it('maxHeaderCount 0 and headerTimeoutMs 0', () => {
    const r = check({ ...ok, limits: { maxHeaderCount: 0, headerTimeoutMs: 0 } });
    expect(r.code).toBe(2);
    expect(r.lines.some((l) => l.startsWith('limits.maxHeaderCount:'))).toBe(true);
    expect(r.lines.some((l) => l.startsWith('limits.headerTimeoutMs:'))).toBe(true);
    // Node's own rule: the head deadline cannot be later than the whole request's.
    expect(check({ ...ok, limits: { headerTimeoutMs: '3 minutes', requestTimeoutMs: '2 minutes' } }).lines).toContain('limits.headerTimeoutMs: must not exceed limits.requestTimeoutMs (120000)');
  });

  it('two listeners on one host:port, across listen and tls.listen', () => {
    const r = check({ ...ok, listen: [{ host: '127.0.0.1', port: 8080 }, { host: '127.0.0.1', port: 8080 }] });
    expect(r.code).toBe(2);
    expect(r.lines).toContain('listen[1]: 127.0.0.1:8080 is already used by listen[0]');
    const t = check({ ...ok, listen: [{ host: '0.0.0.0', port: 8443 }], tls: { listen: [{ host: '127.0.0.1', port: 8443 }], certs: [{ domains: ['a.test'], cert: BIN, key: BIN }] } });
    expect(t.lines).toContain('tls.listen[0]: 127.0.0.1:8443 is already used by listen[0] (0.0.0.0:8443)');
  });

  it('a listener and the admin on one host:port', () => {
    const r = check({ ...ok, listen: [{ host: '127.0.0.1', port: 8080 }], admin: { host: 'localhost', port: 8080 } });
    expect(r.code).toBe(2);
    expect(r.lines.some((l) => /^admin: localhost:8080 is already used by listen\[0\]/.test(l))).toBe(true);
    const t = check({ ...ok, listen: [{ host: '127.0.0.1', port: 8080 }], admin: { host: '127.0.0.1', port: 8443 }, tls: { listen: [{ host: '127.0.0.1', port: 8443 }], certs: [{ domains: ['a.test'], cert: BIN, key: BIN }] } });
    expect(t.lines.some((l) => l.startsWith('admin: 127.0.0.1:8443 is already used by tls.listen[0]'))).toBe(true);
    // Port 0 is "any free port": never a clash; different addresses of one family neither.
    expect(check({ ...ok, listen: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.2', port: 8080 }, { host: '127.0.0.1', port: 8080 }], admin: { host: '127.0.0.1', port: 0 } }).code).toBe(0);
  });

  it('only real loopback addresses and "localhost" go without an admin token', () => {
    for (const host of ['127.evil.example', '127.0.0.1.nip.io', 'localhost.evil.example']) {
      const r = check({ ...ok, admin: { host, port: 9090 } });
      expect(r.code, host).toBe(2);
      expect(r.lines).toContain(`admin.token: required when admin.host (${host}) is not loopback`);
    }
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) expect(check({ ...ok, admin: { host, port: 9090 } }).code, host).toBe(0);
  });

  // Node reads header bytes as Latin-1 and browsers refuse to send other characters: a token outside visible ASCII
  // could never match, and a space at either end is cut from the header.
  it('an admin.token with characters outside visible ASCII is refused, naming the key and what is allowed, by check and at startup', async () => {
    const why = /^admin\.token: .*visible ASCII.*0x21.*0x7E/;
    for (const token of ['токен', 'pass word', 'tab\there', 'café1234', ' lead']) {
      const p = load({ admin: { host: '127.0.0.1', port: 9090, token } }).problems;
      expect(p, token).toEqual([expect.stringMatching(why)]);
      // The value is a secret: the error does not repeat it.
      expect(p[0]).not.toContain(token.trim());
    }
    expect(load({}, { SCRUBBER_ADMIN_TOKEN: 'токен' }).problems).toEqual([expect.stringMatching(why)]);
    for (const token of ['', 'A-z0_9.~+/=!#$%&*', 'x'.repeat(128)]) expect(load({ admin: { host: '127.0.0.1', port: 9090, token } }).problems, token).toEqual([]);
    const r = check({ ...ok, admin: { host: '127.0.0.1', port: 9090, token: 'токен' } });
    expect(r.code).toBe(2);
    expect(r.lines[0]).toMatch(why);
    const child = spawn(process.execPath, [BIN, '--config', writeConfig({ ...ok, listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0, token: 'токен' }, state: { dir: tempDir() } })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c) => { err += c; });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(err.trim().split('\n')[0]).toBe(r.lines[0]);
  });

  it('filter.maxBans: 0 or a fraction is refused, naming the key; the default bounds the blacklist', () => {
    expect(load({ filter: { maxBans: 0 } }).problems).toEqual(['filter.maxBans: must be at least 1']);
    expect(load({ filter: { maxBans: 2.5 } }).problems).toEqual([expect.stringMatching(/^filter\.maxBans: /)]);
    expect(load({}).config?.filter.maxBans).toBe(500000);
    expect(check({ ...ok, filter: { maxBans: 0 } }).lines).toContain('filter.maxBans: must be at least 1');
  });

  it('filter.fairShare.newcomerSources 0 or below is refused, naming the key; a fraction is taken', () => {
    expect(load({ filter: { fairShare: { newcomerSources: 0 } } }).problems).toEqual([expect.stringMatching(/^filter\.fairShare\.newcomerSources: must be more than 0/)]);
    expect(load({ filter: { fairShare: { newcomerSources: -1 } } }).problems.length).toBe(1);
    expect(load({ filter: { fairShare: { newcomerSources: 0.25 } } }).config?.filter.fairShare.newcomerSources).toBe(0.25);
  });

  it('workers 0 or below, or beyond what one machine runs, is refused by check and at startup; 1 and the core count are taken', async () => {
    for (const workers of [0, -1, 1025]) {
      const r = check({ ...ok, workers });
      expect(r.code, String(workers)).toBe(2);
      expect(r.lines).toContain(workers > 0 ? 'workers: at most 1024 (one process per core; was 1025)' : `workers: must be at least 1 (was ${workers})`);
    }
    expect(check({ ...ok, workers: 0 }, {}).lines.length).toBe(1);
    expect(check({ ...ok }, { SCRUBBER_WORKERS: '0' }).lines).toContain('workers: must be at least 1 (was 0) (SCRUBBER_WORKERS="0")');
    for (const workers of [1, 2, 64]) expect(check({ ...ok, workers }).code, String(workers)).toBe(0);
    // Startup refuses it the same way (exit 2, the same line), rather than running one process as if 1 was meant.
    const child = spawn(process.execPath, [BIN, '--config', writeConfig({ ...ok, workers: 0, listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 } })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c) => { err += c; });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(err).toContain('workers: must be at least 1 (was 0)');
  });

  it('1e20 as a size', () => {
    const r = check({ ...ok, limits: { maxBodyBytes: 1e20 } });
    expect(r.code).toBe(2);
    expect(r.lines[0]).toMatch(/^limits\.maxBodyBytes: /);
  });

  it('a duplicate domain name is reported even when that entry has another error', () => {
    const r = check({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }, { name: 'a.test', upstreams: ['nope'] }] });
    expect(r.code).toBe(2);
    expect(r.lines).toContain('domains[1].upstreams[0]: "nope" is not "host:port"');
    expect(r.lines).toContain('domains[1]: host a.test is already used by domains[0]');
  });

  it('16 upstreams is valid, 17 is not', () => {
    const ups = (n: number) => Array.from({ length: n }, (_, i) => `127.0.0.1:${i + 1}`);
    expect(check({ domains: [{ name: 'a.test', upstreams: ups(16) }] }).code).toBe(0);
    expect(check({ domains: [{ name: 'a.test', upstreams: ups(17) }] }).lines).toContain('domains[0].upstreams: 17 upstreams, at most 16');
  });
});

describe('settings that contradict each other: said, not refused', () => {
  it('maxBodyBytes above postBudgetBytes, and a maxInflight above what the upstream connections take: check says so with exit 0', () => {
    const quiet = check(ok);
    expect(quiet.code).toBe(0);
    expect(quiet.lines.filter((l) => l.startsWith('warning:'))).toEqual([]);
    const r = check({ limits: { maxBodyBytes: '2MB', postBudgetBytes: '1MB' }, upstream: { maxConnections: 10 }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1', '127.0.0.1:2'], maxInflight: 21 }, { name: 'b.test', upstreams: ['127.0.0.1:3'], maxInflight: 10 }] });
    expect(r.code).toBe(0);
    expect(r.lines[0]).toMatch(/: ok$/);
    expect(r.lines.slice(1)).toEqual([
      'warning: limits.maxBodyBytes: 2000000 is above limits.postBudgetBytes (1000000): a body larger than the budget always gets 413 (post-budget)',
      'warning: domains[0].maxInflight: 21 is above what its upstreams take at once (upstream.maxConnections 10 × 2 upstreams = 20): past that, requests wait in the queue for a free connection',
    ]);
    // maxConnections 0 is no cap: nothing to say about maxInflight.
    expect(check({ upstream: { maxConnections: 0 }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'], maxInflight: 5000 }] }).lines).toHaveLength(1);
  });

  it('a start with such a config runs, and logs the warning', async () => {
    const dir = tempDir();
    const file = writeConfig({ ...ok, listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0, token: '' }, state: { dir }, workers: 1, limits: { maxBodyBytes: 2048, postBudgetBytes: 1024 } });
    const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => { out += c; });
    try {
      const deadline = Date.now() + 10_000;
      while (!out.includes('scrubber started') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; problem?: string });
      const warned = lines.filter((l) => l.problem !== undefined);
      expect(warned).toHaveLength(1);
      expect(warned[0].level).toBe(40);
      expect(warned[0].problem).toMatch(/^limits\.maxBodyBytes: 2048 is above limits\.postBudgetBytes \(1024\)/);
    } finally { child.kill('SIGTERM'); await once(child, 'exit'); }
  });
});
