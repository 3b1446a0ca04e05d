// A real redis-server for tests: its own process on a free loopback port, no
// persistence, its files in a temporary directory. stop() and restart() act on
// that process by its PID, so a test can take Redis away and bring it back on
// the same port.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';

/** The redis-server binary on PATH, or null (tests that need it skip, saying so). */
export function findRedisServer(): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/bin', '/usr/sbin', '/usr/local/bin'])) {
    if (!dir) continue;
    const p = path.join(dir, 'redis-server');
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}

export const redisSkipReason = 'redis-server is not installed (apt-get install redis-server; .ci/run installs it)';

export interface RedisServer {
  port: number;
  url: string;
  readonly pid: number | undefined;
  /** Stops the process (SIGTERM, then SIGKILL after 2 s) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port (empty: there is no persistence), once it answers PING. */
  restart(): Promise<void>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** True when something on the port answers +PONG to PING. */
function ping(port: number, timeoutMs = 300): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (ok: boolean) => { clearTimeout(t); sock.destroy(); resolve(ok); };
    const t = setTimeout(() => done(false), timeoutMs);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => { buf += d.toString(); if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
    sock.on('error', () => done(false));
  });
}

export async function startRedis(): Promise<RedisServer> {
  const bin = findRedisServer();
  if (!bin) throw new Error(redisSkipReason);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'scrubber-redis-'));
  const port = await freePort();
  let child: ChildProcess | null = null;
  let stderr = '';

  const spawnIt = async () => {
    stderr = '';
    const c = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
      '--protected-mode', 'yes', '--daemonize', 'no', '--loglevel', 'warning'], { stdio: ['ignore', 'ignore', 'pipe'] });
    c.stderr!.on('data', (d) => { stderr += d.toString(); });
    child = c;
    // Bounded: 5 s for the server to answer.
    for (let i = 0; i < 50; i++) {
      if (c.exitCode !== null) throw new Error(`redis-server exited (${c.exitCode}): ${stderr}`);
      if (await ping(port)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    c.kill('SIGKILL');
    throw new Error(`redis-server did not answer PING on 127.0.0.1:${port} within 5 s: ${stderr}`);
  };

  const stop = async () => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, 'exit');
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(t);
  };

  await spawnIt();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() { return (child as ChildProcess | null)?.pid; },
    stop,
    restart: async () => { await stop(); await spawnIt(); },
    close: async () => { await stop(); fs.rmSync(dir, { recursive: true, force: true }); },
  };
}
