// Real servers and clients for tests: upstream origins, the proxy in-process
// on ephemeral ports, raw sockets, clients bound to distinct 127.x.y.z
// addresses. Everything binds to loopback.
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { afterEach } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { loadConfigObject } from '../../src/config/load.ts';
import { startApp, type App } from '../../src/app/app.ts';
import { createLogger, type Logger } from '../../src/log.ts';

export interface Origin {
  server: http.Server;
  port: number;
  address: string;
  /** Requests seen, in order. */
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders; rawHeaders: string[]; body: string }[];
  close(): Promise<void>;
}

/** A real upstream. The handler defaults to 200 "ok from <port>". */
export async function startOrigin(handler?: http.RequestListener, host = '127.0.0.1'): Promise<Origin> {
  const seen: Origin['seen'] = [];
  const server = http.createServer((req, res) => {
    const entry = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: '' };
    seen.push(entry);
    if (handler) return handler(req, res);
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      entry.body = Buffer.concat(chunks).toString();
      const body = `ok from ${port}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
  });
  server.listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    server, port, address: `${host}:${port}`, seen,
    close: () => { server.closeAllConnections(); return new Promise((r) => server.close(() => r())); },
  };
}

/**
 * A listening socket that never accepts, its backlog filled, so that further
 * SYNs are dropped: a real connect timeout on loopback without root. A child
 * process listens and then blocks its event loop, so libuv never accepts.
 */
export async function startBlackhole(): Promise<{ port: number; address: string; close(): void }> {
  const code = `const net=require('node:net');const s=net.createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>{` +
    `process.stdout.write(String(s.address().port)+'\\n',()=>{const a=new Int32Array(new SharedArrayBuffer(4));` +
    // Block in slices and exit once orphaned, so a killed test worker leaves nothing behind.
    `const parent=process.ppid;for(;;){Atomics.wait(a,0,0,500);if(process.ppid!==parent)process.exit(0);}});});`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = await once(child.stdout!, 'data');
  const port = Number(String(line).trim());
  // Fill the accept queue so that the kernel drops further SYNs.
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 3; i++) { const s = net.connect(port, '127.0.0.1'); s.on('error', () => {}); fillers.push(s); }
  await new Promise((r) => setTimeout(r, 200));
  return { port, address: `127.0.0.1:${port}`, close: () => { for (const s of fillers) s.destroy(); child.kill('SIGKILL'); } };
}

/**
 * The real `scrubber` CLI on a config file, its stdout and stderr collected; resolves once it logged
 * "scrubber started" (rejects with the logs when it did not within timeoutMs).
 */
export async function startCli(file: string, opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ child: ChildProcess; logs(): string }> {
  let logs = '';
  const child = spawn(process.execPath, [path.resolve('bin/scrubber.js'), '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  child.stdout!.on('data', (d) => { logs += d; });
  child.stderr!.on('data', (d) => { logs += d; });
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  while (!logs.includes('scrubber started')) {
    if (Date.now() > deadline || child.exitCode !== null) { child.kill('SIGKILL'); throw new Error(`did not start:\n${logs}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, logs: () => logs };
}

/** The CLI with two workers in front of `upstream` for one domain, on free loopback ports (config keys in `extra`
 *  added or replaced); `stop()` sends SIGTERM and waits for the exit. */
export async function startWorkersCli(host: string, upstream: string, extra: Record<string, unknown> = {}): Promise<{ child: ChildProcess; logs(): string; port: number; admin: number; file: string; config: Record<string, unknown>; stop(): Promise<void> }> {
  const dir = tempDir('scrubber-workers-');
  const port = await freePort(), admin = await freePort();
  const file = path.join(dir, 'c.json');
  const config = {
    listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, workers: 2,
    state: { dir: path.join(dir, 'data') }, shutdown: { drainTimeoutMs: 500 }, domains: [{ name: host, upstreams: [upstream] }], ...extra,
  };
  fs.writeFileSync(file, JSON.stringify(config));
  const { child, logs } = await startCli(file);
  const stop = async () => { if (child.exitCode === null) { child.kill('SIGTERM'); await once(child, 'exit'); } };
  return { child, logs, port, admin, file, config, stop };
}

/** A port with nothing listening on it (connection refused). */
export async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const p = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}

export function tempDir(prefix = 'scrubber-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface Proxy {
  app: App;
  port: number;
  adminPort: number;
  url: string;
  adminUrl: string;
  stateDir: string;
  close(): Promise<void>;
}

/** Starts the proxy in-process on ephemeral ports with the given config overrides (must be valid). */
export async function startProxy(overrides: Record<string, unknown>, opts: { configFile?: string; log?: Logger } = {}): Promise<Proxy> {
  const stateDir = (overrides.state as { dir?: string } | undefined)?.dir ?? tempDir();
  const raw = {
    listen: [{ host: '127.0.0.1', port: 0 }],
    admin: { host: '127.0.0.1', port: 0, token: '' },
    log: { level: 'silent' },
    ...overrides,
    state: { dir: stateDir, ...(overrides.state as object | undefined) },
  };
  const r = loadConfigObject(raw, {});
  if (!r.ok) throw new Error('test config invalid:\n' + r.problems.join('\n'));
  const app = await startApp(r.config, { configFile: opts.configFile, log: opts.log ?? createLogger('silent') });
  const port = app.listeners.addresses()[0].port;
  const adminPort = app.admin.address()!.port;
  return {
    app, port, adminPort, stateDir, url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}`,
    close: async () => { await app.close(); },
  };
}

export interface RawResponse { status: number; headers: http.IncomingHttpHeaders; body: string }

/** One HTTP request with node:http (no keep-alive unless an agent is given). */
export function request(url: string, opts: http.RequestOptions & { body?: string | Buffer } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false, ...opts }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Writes raw bytes on a fresh TCP connection and collects everything until the peer closes (or timeoutMs). */
export function rawExchange(port: number, data: string | Buffer, opts: { timeoutMs?: number; localAddress?: string } = {}): Promise<{ text: string; closed: boolean; error?: string }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
    const chunks: Buffer[] = [];
    const t = setTimeout(() => { s.destroy(); resolve({ text: Buffer.concat(chunks).toString(), closed: false }); }, opts.timeoutMs ?? 2000);
    s.on('connect', () => s.write(data));
    s.on('data', (c) => chunks.push(c));
    s.on('close', () => { clearTimeout(t); resolve({ text: Buffer.concat(chunks).toString(), closed: true }); });
    s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); resolve({ text: Buffer.concat(chunks).toString(), closed: true, error: e.code }); });
  });
}

/** A reply function for test sites: status, Content-Type and body, optionally after a delay; nothing if the client left. */
export function replier(res: http.ServerResponse): (status: number, type: string, body: string, delay?: number) => void {
  return (status, type, body, delay = 0) => void setTimeout(() => {
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }, delay);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 10 ms for at most `ms`; its last value. */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (cond()) return true; await sleep(10); }
  return cond();
}

/** The status of a raw HTTP/1.1 response text (0 when none yet). */
export const statusOf = (text: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);

/** A raw connection to the proxy that writes `head` at once and collects everything it receives. */
export function openRaw(port: number, head: string, localAddress?: string) {
  const s = net.connect({ port, host: '127.0.0.1', localAddress });
  s.on('error', () => {});
  let text = '';
  s.on('data', (c) => { text += c; });
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  s.write(head);
  return { s, closed, text: () => text };
}

/** A domain entry with short health-check times for tests. */
export function domain(name: string, upstreams: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, upstreams, healthCheck: { type: 'tcp', intervalMs: 60000, timeoutMs: 500, fall: 3, rise: 2 }, ...extra };
}

/** For a test file whose tests each start their own CLI (with workers) and origins: everything started is stopped after
 *  each test. Call at the file's top level. */
export function perTest(): { cli: typeof startWorkersCli; origin: typeof startOrigin } {
  const clis: Awaited<ReturnType<typeof startWorkersCli>>[] = [];
  const origins: Origin[] = [];
  afterEach(async () => {
    for (const c of clis.splice(0)) await c.stop();
    for (const o of origins.splice(0)) await o.close();
  });
  return {
    cli: async (...a) => { const c = await startWorkersCli(...a); clis.push(c); return c; },
    origin: async (...a) => { const o = await startOrigin(...a); origins.push(o); return o; },
  };
}

const BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';

/** A browser's navigation to `/` of `host` from `local` (its cookie if given): the status and the cookie it was given. */
export function browserPage(port: number, local: string, host: string, cookie?: string): Promise<{ status: number; cookie: string }> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', localAddress: local, agent: false,
      headers: { host, 'user-agent': BROWSER_UA, accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'accept-language': 'en', ...(cookie ? { cookie } : {}) } }, (res) => {
      res.resume(); res.on('end', () => resolve({ status: res.statusCode ?? 0, cookie: String(res.headers['set-cookie']?.[0] ?? '').split(';')[0] }));
    });
    req.on('error', () => resolve({ status: 0, cookie: '' }));
    req.end();
  });
}

