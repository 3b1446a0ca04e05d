// Scrubber nodes (the real CLI, one process each) on one Redis, for the
// many-nodes tests: a config per node, start and stop by PID, the admin API,
// and whether a source is refused at accept.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, tempDir, request, rawExchange, sleep } from './servers.ts';

const BIN = path.resolve('bin/scrubber.js');

export interface RedisNode { port: number; admin: number; dir: string; file: string; child: ChildProcess; logs: string }

/** A node's config file (its own state.dir and ports) on `redisUrl`, in front of `upstream` for `host`. */
export async function nodeFiles(name: string, redisUrl: string, upstream: string, host: string, extra: Record<string, unknown> = {}): Promise<Omit<RedisNode, 'child' | 'logs'>> {
  const dir = tempDir(`scrubber-node-${name}-`);
  const port = await freePort(), admin = await freePort();
  const file = path.join(dir, 'c.json');
  fs.writeFileSync(file, JSON.stringify({
    listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin },
    state: { dir: path.join(dir, 'data'), redis: { url: redisUrl } }, filter: { mode: 'auto' },
    shutdown: { drainTimeoutMs: 500 }, domains: [{ name: host, upstreams: [upstream] }], ...extra,
  }));
  return { port, admin, dir, file };
}

export async function startNode(n: Omit<RedisNode, 'child' | 'logs'>): Promise<RedisNode> {
  const child = spawn(process.execPath, [BIN, '--config', n.file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SCRUBBER_LOG_LEVEL: 'info' } });
  const node: RedisNode = { ...n, child, logs: '' };
  child.stdout!.on('data', (d) => { node.logs += d; });
  child.stderr!.on('data', (d) => { node.logs += d; });
  for (let i = 0; i < 200 && !node.logs.includes('scrubber started') && child.exitCode === null; i++) await sleep(50);
  if (!node.logs.includes('scrubber started')) throw new Error(`node did not start:\n${node.logs}`);
  return node;
}

/** SIGTERM, and SIGKILL if it has not gone within 8 s. */
export async function stopNode(n: RedisNode): Promise<void> {
  if (n.child.exitCode !== null || n.child.signalCode !== null) return;
  const exited = new Promise((r) => n.child.once('exit', r));
  n.child.kill('SIGTERM');
  const t = setTimeout(() => n.child.kill('SIGKILL'), 8000);
  await exited;
  clearTimeout(t);
}

export const nodeApi = (n: RedisNode, method: string, p: string, body?: unknown) =>
  request(`http://127.0.0.1:${n.admin}${p}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });

/** True when a connection from `local` is refused at accept (closed with no answer). */
export async function refusedAt(n: RedisNode, local: string, host: string): Promise<boolean> {
  const r = await rawExchange(n.port, `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`, { localAddress: local, timeoutMs: 1000 });
  return r.text === '';
}
