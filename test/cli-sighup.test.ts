// SIGHUP while the proxy is still starting (a config tool that writes the
// file and signals right after a service start): Node's default for SIGHUP is
// to exit (129), and the handler used to be installed only once the start was
// done. Now the reload is held and applied once the proxy has started.
// The start is held open on purpose: state.redis.url points at a server that
// accepts and never answers, so the start waits for Redis (about 2 s each for
// the secret and the snapshot) and the signal is sent the moment the proxy
// connects to it, in the middle of the start.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { startOrigin, tempDir, request, until, type Origin } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');

let a: Origin, b: Origin;
let silent: net.Server;
const held: net.Socket[] = [];
beforeAll(async () => {
  a = await startOrigin((_req, res) => res.end('A'));
  b = await startOrigin((_req, res) => res.end('B'));
  silent = net.createServer((s) => { held.push(s); s.on('error', () => {}); }).listen(0, '127.0.0.1');
  await once(silent, 'listening');
});
afterAll(async () => {
  for (const s of held) s.destroy();
  silent.close();
  await a.close(); await b.close();
});

describe('SIGHUP during the start', () => {
  it('does not kill the process; the reload it asked for is applied once the start is done', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'c.json');
    const config = (upstream: string) => ({
      listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, log: { level: 'info' },
      state: { dir: path.join(dir, 'state'), redis: { url: `redis://127.0.0.1:${(silent.address() as net.AddressInfo).port}` } },
      shutdown: { drainTimeoutMs: 500 }, workers: 1, domains: [{ name: 'site.test', upstreams: [upstream] }],
    });
    fs.writeFileSync(file, JSON.stringify(config(a.address)));
    const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let logs = '';
    child.stdout!.on('data', (d) => { logs += d; });
    child.stderr!.on('data', (d) => { logs += d; });
    try {
      await once(silent, 'connection');
      expect(logs).not.toContain('scrubber started');
      // The file changed, and the reload asked for, while the start is under way.
      fs.writeFileSync(file, JSON.stringify(config(b.address)));
      child.kill('SIGHUP');
      expect(await until(() => logs.includes('scrubber started') || child.exitCode !== null || child.signalCode !== null, 15_000)).toBe(true);
      expect(child.exitCode, logs).toBeNull();
      expect(child.signalCode, logs).toBeNull();
      expect(await until(() => logs.includes('"msg":"config reloaded"'), 2000)).toBe(true);
      expect(logs).toContain('SIGHUP during the start');
      const port = (JSON.parse(logs.split('\n').find((l) => l.includes('scrubber started'))!) as { listen: { port: number }[] }).listen[0].port;
      expect((await request(`http://127.0.0.1:${port}/`, { headers: { host: 'site.test' } })).body).toBe('B');
    } finally {
      if (child.exitCode === null && child.signalCode === null) { child.kill('SIGTERM'); await once(child, 'exit'); }
    }
  });
});
