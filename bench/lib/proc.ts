// Child processes of a bench run: spawned (optionally pinned to a core with
// taskset), remembered by PID, and stopped by PID at the end — also on
// Ctrl-C, SIGTERM and uncaught errors. Never anything found by name.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';

export const NODE = process.execPath;
export const ROOT = path.resolve(import.meta.dirname, '..', '..');

function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin'])) {
    const p = path.join(dir, cmd);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}
export const tools = { taskset: which('taskset'), wrk: which('wrk'), nginx: which('nginx'), haproxy: which('haproxy') };

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** Resolves with the exit code (or signal name) once the process has gone. */
  exited: Promise<number | string>;
  stop(timeoutMs?: number): Promise<void>;
}

const children = new Set<Child>();
let cleanupInstalled = false;

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  const killAll = () => { for (const c of children) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } } };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      console.error(`\n${sig}: stopping ${children.size} child process(es)`);
      stopAll().finally(() => process.exit(130));
    });
  }
  process.on('uncaughtException', (e) => { console.error('bench harness error:', e); stopAll().finally(() => process.exit(1)); });
  process.on('unhandledRejection', (e) => { console.error('bench harness error:', e); stopAll().finally(() => process.exit(1)); });
}

export interface SpawnOpts {
  name: string;
  cpu?: number | null;
  stdout?: 'pipe' | 'ignore' | 'inherit' | number;
  stderr?: 'pipe' | 'ignore' | 'inherit' | number;
  ipc?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Signal for a graceful stop (SIGKILL follows after the timeout). */
  stopSignal?: NodeJS.Signals;
}

/** Starts cmd (pinned with taskset when a cpu is given and taskset exists). */
export function start(cmd: string, args: string[], opts: SpawnOpts): Child {
  installCleanup();
  let file = cmd, argv = args;
  if (opts.cpu != null && tools.taskset && os.availableParallelism() > opts.cpu) { file = tools.taskset; argv = ['-c', String(opts.cpu), cmd, ...args]; }
  const stdio: ('pipe' | 'ignore' | 'inherit' | 'ipc' | number)[] = ['ignore', opts.stdout ?? 'ignore', opts.stderr ?? 'inherit'];
  if (opts.ipc) stdio.push('ipc');
  // taskset execs the command, so the PID we hold is the real server's PID.
  const proc = spawn(file, argv, { stdio, env: opts.env ?? process.env, cwd: opts.cwd ?? ROOT });
  if (!proc.pid) throw new Error(`${opts.name}: could not start ${cmd}`);
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  const child: Child = {
    name: opts.name, proc, pid: proc.pid, exited,
    async stop(timeoutMs = 3000) {
      if (proc.exitCode !== null || proc.signalCode !== null) { children.delete(child); return; }
      try { process.kill(proc.pid!, opts.stopSignal ?? 'SIGTERM'); } catch { /* gone */ }
      const t = setTimeout(() => { try { process.kill(proc.pid!, 'SIGKILL'); } catch { /* gone */ } }, timeoutMs);
      await exited;
      clearTimeout(t);
      children.delete(child);
    },
  };
  proc.on('error', (e) => console.error(`${opts.name}: ${e.message}`));
  children.add(child);
  exited.then(() => children.delete(child));
  return child;
}

/** Runs a .ts module of bench/ in a new node process (with IPC when asked). */
export function startNode(script: string, args: string[], opts: SpawnOpts): Child {
  return start(NODE, ['--no-warnings', '--max-old-space-size=4096', script, ...args], opts);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => c.stop(2000)));
}

/** Ports handed out by freePort in this process: the kernel may give a port just closed again, and two of a target's
 *  ports (its listener and its admin API) that came out the same made it refuse its config (a lab run died of it). */
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (;;) {
    const s = net.createServer().listen(0, '127.0.0.1');
    await once(s, 'listening');
    const p = (s.address() as net.AddressInfo).port;
    await new Promise((r) => s.close(r));
    if (handedOut.has(p)) continue;
    handedOut.add(p);
    return p;
  }
}

/** Waits until something accepts TCP connections on host:port (or the child exits). */
export async function waitForPort(port: number, child?: Child, timeoutMs = 15000, host = '127.0.0.1'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let dead = false;
  child?.exited.then(() => { dead = true; });
  while (Date.now() < deadline) {
    if (dead) throw new Error(`${child!.name} exited before listening on ${port}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, host);
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${child?.name ?? 'server'}: nothing listening on ${host}:${port} after ${timeoutMs} ms`);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

const TICKS = (() => { try { return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100; } catch { return 100; } })();

/** CPU seconds (user+system) a process has used so far, from /proc/<pid>/stat; null when unreadable. */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the comm field: state is [0], utime is field 14 → [11], stime [12].
    return (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch { return null; }
}

/** Resident set size in bytes, from /proc/<pid>/status. */
export function rssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch { return null; }
}

/** Starts the real proxy (bin/scrubber.js) on a generated config in its own temp dir. */
export async function startScrubber(opts: { name?: string; root?: string; cpu?: number | null; upstream: string; domain: string; aliases?: string[]; mode: 'auto' | 'always' | 'off'; extra?: Record<string, unknown>; domainExtra?: Record<string, unknown> }): Promise<{ child: Child; port: number; adminPort: number; dir: string; adminUrl: string }> {
  const dir = tempDir('scrubber-bench-');
  const port = await freePort();
  const adminPort = await freePort();
  const config = {
    listen: [{ host: '127.0.0.1', port }],
    admin: { host: '127.0.0.1', port: adminPort, token: '' },
    state: { dir: path.join(dir, 'state') },
    log: { level: 'warn' },
    filter: { mode: opts.mode },
    // One process unless a bench asks for workers (extra.workers): the figures of the other benches are per worker,
    // pinned to one core, as they were before worker processes existed.
    workers: 1,
    domains: [{
      name: opts.domain, aliases: opts.aliases ?? ['127.0.0.1', 'localhost'], upstreams: [opts.upstream],
      healthCheck: { type: 'tcp', path: '/', intervalMs: 60000, timeoutMs: 2000, fall: 3, rise: 2 },
      ...opts.domainExtra,
    }],
    ...opts.extra,
  };
  const file = path.join(dir, 'scrubber.json');
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  const log = fs.openSync(path.join(dir, 'scrubber.log'), 'w');
  // BENCH_SCRUBBER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the proxy under the bench's load;
  // BENCH_BASELINE_NODE_ARGS, when set, stands in for it for the other checkout (--baseline): one flag against another.
  const env = opts.root && process.env.BENCH_BASELINE_NODE_ARGS !== undefined ? process.env.BENCH_BASELINE_NODE_ARGS : process.env.BENCH_SCRUBBER_NODE_ARGS;
  const nodeArgs = (env ?? '').split(' ').filter(Boolean);
  const child = start(NODE, [...nodeArgs, '--no-warnings', path.join(opts.root ?? ROOT, 'bin/scrubber.js'), '--config', file], { name: opts.name ?? 'scrubber', cpu: opts.cpu, stdout: log, stderr: log });
  fs.closeSync(log);
  try { await waitForPort(port, child); await waitForPort(adminPort, child); } catch (e) {
    throw new Error(`${(e as Error).message}\n--- ${path.join(dir, 'scrubber.log')}:\n${fs.readFileSync(path.join(dir, 'scrubber.log'), 'utf8').slice(-2000)}`);
  }
  return { child, port, adminPort, dir, adminUrl: `http://127.0.0.1:${adminPort}` };
}
