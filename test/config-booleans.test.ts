// Booleans from the environment (and the file) mean what they say: exactly
// true or false. Before, anything but "false" loaded as true, so
// SCRUBBER_DEMO_ENABLED=0 (or no, off, "") started the demo origin. Anything
// else is refused by `scrubber check` and at start, naming the key and the
// variable.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfigObject } from '../src/config/load.ts';
import { tempDir } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');
const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] };

function run(command: string[], env: Record<string, string>) {
  const file = path.join(tempDir(), 'c.json');
  // Ephemeral loopback ports: on the current code the start below does start (then is stopped by the timeout).
  fs.writeFileSync(file, JSON.stringify({ ...ok, listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, state: { dir: path.join(path.dirname(file), 'state') } }));
  const r = spawnSync(process.execPath, [BIN, ...command, '--config', file], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 5_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

describe('boolean keys', () => {
  it('"true" and "false" from the environment load as such', () => {
    for (const [v, want] of [['true', true], ['false', false]] as const) {
      const r = loadConfigObject(ok, { SCRUBBER_DEMO_ENABLED: v, SCRUBBER_TLS_HTTP2: v });
      expect(r.ok && [r.config.demo.enabled, r.config.tls.http2]).toEqual([want, want]);
    }
  });

  it('anything else from the environment is refused by check, naming the key and the variable', () => {
    for (const v of ['0', '1', 'no', 'off', 'yes', '', 'TRUE']) {
      const r = run(['check'], { SCRUBBER_DEMO_ENABLED: v });
      expect(r.code, JSON.stringify(v)).toBe(2);
      expect(r.out).toContain(`demo.enabled: must be true or false (SCRUBBER_DEMO_ENABLED=${JSON.stringify(v)})`);
    }
  });

  it('and at start: exit 2, nothing started', () => {
    const r = run([], { SCRUBBER_UPSTREAM_REJECT_UNAUTHORIZED: 'no' });
    expect(r.code).toBe(2);
    expect(r.out).toContain('upstream.rejectUnauthorized: must be true or false (SCRUBBER_UPSTREAM_REJECT_UNAUTHORIZED="no")');
    expect(r.out).not.toContain('scrubber started');
  });

  it('a string in the file is refused too (only JSON true/false, or the text "true"/"false")', () => {
    const r = loadConfigObject({ ...ok, filter: { challenge: { enabled: 'yes' } } }, {});
    expect(r.ok ? [] : r.problems).toEqual([expect.stringMatching(/^filter\.challenge\.enabled: must be true or false/)]);
  });
});
