// Config and reload: minLatencyMs takes a duration; a range problem names the environment variable; a mapped IPv4
// bind clashes with its IPv4 form; a reload compares restart-only keys by value, not by key order. Each failed on the
// code before 2026-11-29 (a reviewer's).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { freePort, request, startCli, startOrigin, tempDir } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');
const SITE = { name: 'a.test', upstreams: ['127.0.0.1:1'] };

function check(config: unknown, env: Record<string, string> = {}) {
  const file = path.join(tempDir('scrubber-review-cfg-'), 'c.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const r = spawnSync(process.execPath, [BIN, 'check', '--config', file], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

describe('scrubber check', () => {
  // README "Sizes and durations": "keys that hold a duration (names ending in `Ms` or `Seconds` ...) take either a
  // whole number in the key's unit or a text with a unit, in the file and in the environment alike" (e.g. "1500ms",
  // "10s"), and a fraction of a millisecond is refused. `filter.attack.minLatencyMs` is declared `format: Number` in
  // src/config/schema.ts (attack.minLatencyMs), so load.ts strictFormatOf maps it to 'decimal', not 'duration-ms':
  // "1s" is refused ("is not a number: value was "1s"", convict's suffix left in), and 0.5 ms or 1e12 ms pass.
  it('filter.attack.minLatencyMs takes a duration with a unit like every other …Ms key', () => {
    const file = check({ domains: [SITE], filter: { attack: { minLatencyMs: '1s' } } });
    expect(file.out).not.toContain('filter.attack.minLatencyMs');
    expect(file.code).toBe(0);
    const env = check({ domains: [SITE] }, { SCRUBBER_FILTER_ATTACK_MIN_LATENCY_MS: '750ms' });
    expect(env.out).not.toContain('filter.attack.minLatencyMs');
    expect(env.code).toBe(0);
  });

  // README "Configuration": "Every key can also come from the environment ... The environment wins over the file",
  // and a bad value from the environment is refused "naming the key and the variable"
  // (`demo.enabled: must be true or false (SCRUBBER_DEMO_ENABLED="0")`). That holds only for convict's type errors:
  // the range checks of validateStructure (workers, limits.* of 0, headerTimeoutMs > requestTimeoutMs, ...) are
  // pushed as they are (src/config/load.ts:142, no withEnvSource), so with `"workers": 1` in the file and
  // SCRUBBER_WORKERS=0 the operator reads "workers: must be at least 1 (was 0)" while the file says 1, and no
  // variable is named.
  it('a range problem of a key set from the environment names the variable, as a type problem does', () => {
    const r = check({ domains: [SITE], workers: 1, limits: { maxHeaderCount: 50 } }, { SCRUBBER_WORKERS: '0', SCRUBBER_LIMITS_MAX_HEADER_COUNT: '0' });
    expect(r.code).toBe(2);
    const lines = r.out.trim().split('\n');
    expect(lines.find((l) => l.startsWith('workers:'))).toContain('SCRUBBER_WORKERS');
    expect(lines.find((l) => l.startsWith('limits.maxHeaderCount:'))).toContain('SCRUBBER_LIMITS_MAX_HEADER_COUNT');
  });

  // README "What `scrubber check` refuses besides types": "two sockets on one address and port, among `listen`,
  // `tls.listen`, `admin` and the demo origin". ::ffff:127.0.0.1 is the IPv4-mapped form of 127.0.0.1 (README itself
  // treats `::ffff:127.x.y.z` as the same loopback address for admin.host), and binding both on one port fails with
  // EADDRINUSE. src/config/validate.ts bindScope()/sameBind() compare the literal texts ('::ffff:7f00:1' is not
  // '127.0.0.1', nor IPv4 for the 0.0.0.0 rule), so check says ok and the start then fails.
  it('refuses listen on 127.0.0.1:P and ::ffff:127.0.0.1:P (one socket address), as it refuses other clashes', () => {
    const r = check({ domains: [SITE], listen: [{ host: '127.0.0.1', port: 18181 }, { host: '::ffff:127.0.0.1', port: 18181 }] });
    expect(r.code, r.out).toBe(2);
    expect(r.out).toContain('listen[1]');
  });
});

describe('reload', () => {
  // SPEC §1: "SIGHUP (and POST /api/reload) reloads the config: a valid new config takes effect". README: a reload
  // that *changes* `listen`, `admin.*`, ... is refused as "<key>: changing it needs a restart". checkReload()
  // (src/app/admin-wiring.ts:31) compares JSON.stringify of the old and new values, so the same listener written
  // {"port": P, "host": "127.0.0.1"} instead of {"host": ..., "port": ...} (a config tool that sorts or rewrites
  // keys) counts as a change: every reload is refused ("listen: changing it needs a restart") and the valid domain
  // change in the same file is never applied.
  it('a listener written with its keys in another order is not a change: the reload is applied', async () => {
    const a = await startOrigin((_q, s) => s.end('A'));
    const b = await startOrigin((_q, s) => s.end('B'));
    const dir = tempDir('scrubber-review-reload-');
    const file = path.join(dir, 'c.json');
    const port = await freePort();
    const admin = await freePort();
    const base = { admin: { host: '127.0.0.1', port: admin }, workers: 1, state: { dir: path.join(dir, 'data') }, shutdown: { drainTimeoutMs: 500 } };
    fs.writeFileSync(file, JSON.stringify({ listen: [{ host: '127.0.0.1', port }], ...base, domains: [{ name: 'a.test', upstreams: [a.address] }] }));
    const { child, logs } = await startCli(file, { timeoutMs: 20_000 });
    try {
      expect((await request(`http://127.0.0.1:${port}/`, { headers: { host: 'a.test' } })).body).toBe('A');
      // Same listener, same admin; only the upstream changes.
      fs.writeFileSync(file, JSON.stringify({ listen: [{ port, host: '127.0.0.1' }], ...base, domains: [{ name: 'a.test', upstreams: [b.address] }] }));
      const r = await request(`http://127.0.0.1:${admin}/api/reload`, { method: 'POST' });
      expect(r.body + '\n' + logs()).not.toContain('changing it needs a restart');
      expect(r.status).toBe(200);
      expect((await request(`http://127.0.0.1:${port}/`, { headers: { host: 'a.test' } })).body).toBe('B');
    } finally {
      if (child.exitCode === null) { child.kill('SIGTERM'); await once(child, 'exit'); }
      await a.close(); await b.close();
    }
  }, 40_000);
});
