// The CLI's answers to a bad config and to signals during the start, with
// the real CLI as a child process. Each failed on the code before 2026-11-29:
// - `check` printed V8's JSON message as it is (it quotes the file around the
//   fault, line breaks and all): one problem over several lines;
// - a key with the wrong type was reported twice (convict's line, then the
//   structural check's), from the file and from the environment alike;
// - SIGTERM or SIGINT while the proxy started (waiting for Redis) ended it by
//   the signal, not the exit 0 of a stop: the handlers came only once it had
//   started (SIGHUP was held already).
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { freePort, tempDir } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function check(text: string) {
  const dir = tempDir('scrubber-cli-');
  const file = path.join(dir, 'c.json');
  fs.writeFileSync(file, text);
  const r = spawnSync(process.execPath, [BIN, 'check', '--config', file], { encoding: 'utf8', timeout: 15_000 });
  return { code: r.status, lines: r.stdout.split('\n').filter((l) => l !== '') };
}

describe('scrubber check: one line per problem', () => {
  it('a config that is not JSON (a trailing comma on line 4 of a pretty-printed file) is reported on one line', () => {
    const r = check('{\n  "listen": [\n    { "host": "127.0.0.1", "port": 8080 },\n  ],\n  "domains": [{ "name": "a.test", "upstreams": ["127.0.0.1:1"] }]\n}\n');
    expect(r.code).toBe(2);
    // One problem: one line (the parser's excerpt of the file, with its line breaks, is printed as it is).
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^\(file\): .* is not valid JSON/);
  });

  it('a key given with the wrong type is one problem, reported once', () => {
    const r = check(JSON.stringify({ domains: 'a.test', filter: { whitelist: '127.0.0.5' } }));
    expect(r.code).toBe(2);
    expect(r.lines.filter((l) => l.startsWith('domains:'))).toHaveLength(1);
    expect(r.lines.filter((l) => l.startsWith('filter.whitelist:'))).toHaveLength(1);
  });
});

describe('signals while the proxy is starting', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} during the start (waiting for an unreachable Redis) ends the process with exit 0`, async () => {
      const dir = tempDir('scrubber-cli-');
      const file = path.join(dir, 'c.json');
      // Nothing listens on the Redis port: the start waits for it a few seconds, then runs on local state.
      const redisPort = await freePort();
      fs.writeFileSync(file, JSON.stringify({
        listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, workers: 1,
        state: { dir: path.join(dir, 'data'), redis: { url: `redis://127.0.0.1:${redisPort}` } },
        shutdown: { drainTimeoutMs: 500 }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }],
      }));
      const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let logs = '';
      child.stdout!.on('data', (d) => { logs += d; });
      child.stderr!.on('data', (d) => { logs += d; });
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      // The first log line comes while the start still waits for Redis (the proxy is not started yet).
      const t0 = Date.now();
      while (!logs.includes('redis: unreachable') && Date.now() - t0 < 10_000 && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
      expect(logs).toContain('redis: unreachable');
      expect(logs).not.toContain('scrubber started');
      child.kill(signal);
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000));
      const result = await Promise.race([exited, timeout]);
      if (result === 'timeout') child.kill('SIGKILL');
      expect(result).not.toBe('timeout');
      const [code, sig] = result as [number | null, NodeJS.Signals | null];
      // SPEC §1: "SIGTERM/SIGINT: stop accepting, finish in-flight requests (bounded drain time), persist state, exit 0."
      expect({ code, sig }).toEqual({ code: 0, sig: null });
    }, 30_000);
  }
});
