// Black-box: the real `scrubber` CLI as a child process. `check`, environment
// overrides, SIGHUP reload (valid within 1 s without dropping connections;
// invalid refused, old kept), and SIGTERM drain.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { once } from 'node:events';
import { startOrigin, tempDir, request, sleep, type Origin } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');

function check(config: unknown, env: Record<string, string> = {}) {
  const dir = tempDir();
  const file = path.join(dir, 'c.json');
  fs.writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config));
  const r = spawnSync(process.execPath, [BIN, 'check', '--config', file], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, lines: r.stdout.trim().split('\n') };
}

describe('scrubber check', () => {
  const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] };

  it('exits 0 for a valid config', () => {
    expect(check(ok).code).toBe(0);
  });

  it('exits 2 with one line per problem, each naming the key', () => {
    const r = check({
      listen: [{ host: '127.0.0.1', port: 99999 }],
      upstream: { connectTimeoutMs: 'soon' },
      bogus: true,
      domains: [
        { name: 'a.test', upstreams: ['127.0.0.1:1'] },
        { name: 'b.test', upstreams: Array.from({ length: 17 }, (_, i) => `127.0.0.1:${i + 1}`) },
        { name: 'c.test', upstreams: ['nope'], healthCheck: { type: 'icmp' }, extra: 1 },
        { name: 'a.test', upstreams: ['127.0.0.1:2'] },
      ],
    });
    expect(r.code).toBe(2);
    expect(r.lines).toEqual(expect.arrayContaining([
      'listen[0].port: must be an integer 0..65535',
      'bogus: unknown key',
      'domains[1].upstreams: 17 upstreams, at most 16',
      'domains[2].upstreams[0]: "nope" is not "host:port"',
      'domains[2].healthCheck.type: must be tcp, http or https',
      'domains[2].extra: unknown key',
      'domains[3]: host a.test is already used by domains[0]',
    ]));
    expect(r.lines.some((l) => l.startsWith('upstream.connectTimeoutMs:'))).toBe(true);
  });

  it('refuses a non-loopback admin listener without a token', () => {
    const r = check({ ...ok, admin: { host: '0.0.0.0', port: 9090, token: '' } });
    expect(r.code).toBe(2);
    expect(r.lines).toContain('admin.token: required when admin.host (0.0.0.0) is not loopback');
  });

  it('takes a redis:// URL for state.redis.url and refuses anything else, naming the key', () => {
    expect(check({ ...ok, state: { dir: 'data', redis: { url: 'redis://127.0.0.1:6379' } } }).code).toBe(0);
    const r = check({ ...ok, state: { dir: 'data', redis: { url: 'http://127.0.0.1:6379' } } });
    expect(r.code).toBe(2);
    expect(r.lines[0]).toMatch(/^state\.redis\.url: /);
  });

  it('reports unreadable and malformed files', () => {
    expect(check('{not json').lines[0]).toMatch(/^\(file\): .* is not valid JSON/);
    const r = spawnSync(process.execPath, [BIN, 'check', '--config', '/nonexistent/x.json'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('cannot read');
  });

  it('takes every key from the environment (SCRUBBER_...)', () => {
    expect(check(ok, { SCRUBBER_UPSTREAM_CONNECT_TIMEOUT_MS: 'x' }).lines[0]).toMatch(/^upstream.connectTimeoutMs:/);
    expect(check(ok, { SCRUBBER_DOMAINS: JSON.stringify([{ name: 'e.test', upstreams: Array(17).fill('127.0.0.1:1') }]) }).lines).toContain('domains[0].upstreams: 17 upstreams, at most 16');
    expect(check(ok, { SCRUBBER_FILTER_MODE: 'sometimes' }).code).toBe(2);
    expect(check(ok, { SCRUBBER_FILTER_MODE: 'off' }).code).toBe(0);
  });

  it('the shipped default config is valid', () => {
    const r = spawnSync(process.execPath, [BIN, 'check', '--config', 'config/default.json'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
  });
});

describe('running the CLI', () => {
  let a: Origin;
  let b: Origin;
  let child: ChildProcess;
  let port: number;
  let adminPort: number;
  let file: string;
  let logs = '';
  const config = (upstream: string, extra: Record<string, unknown> = {}) => ({
    listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 },
    state: { dir: path.join(path.dirname(file), 'state') }, shutdown: { drainTimeoutMs: 3000 },
    domains: [{ name: 'site.test', upstreams: [upstream] }], ...extra,
  });

  beforeAll(async () => {
    a = await startOrigin((req, res) => {
      // /slow answers after 1 s: an in-flight request during reload and drain.
      setTimeout(() => res.end('A'), req.url === '/slow' ? 1000 : 0);
    });
    b = await startOrigin((_req, res) => res.end('B'));
    // Port 0 (the kernel's choice, read back from the start line): a port found free and bound later can be taken by
    // another test in between.
    file = path.join(tempDir(), 'scrubber.json');
    fs.writeFileSync(file, JSON.stringify(config(a.address)));
    child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SCRUBBER_LOG_LEVEL: 'info' } });
    child.stdout!.on('data', (d) => { logs += d; });
    child.stderr!.on('data', (d) => { logs += d; });
    for (let i = 0; i < 100 && !logs.includes('scrubber started'); i++) await sleep(50);
    expect(logs).toContain('scrubber started');
    const started = JSON.parse(logs.split('\n').find((l) => l.includes('scrubber started'))!) as { listen: { port: number }[]; admin: { port: number } };
    port = started.listen[0].port;
    adminPort = started.admin.port;
  });
  afterAll(async () => {
    if (child.exitCode === null) { child.kill('SIGKILL'); }
    await a.close(); await b.close();
  });

  const get = (p = '/', agent?: http.Agent) => request(`http://127.0.0.1:${port}${p}`, { headers: { host: 'site.test' }, agent });

  it('forwards and logs JSON lines', async () => {
    expect((await get()).body).toBe('A');
    const line = logs.split('\n').find((l) => l.includes('scrubber started'))!;
    expect(JSON.parse(line).level).toBe(30);
  });

  it('/healthz answers on the admin listener', async () => {
    const r = await request(`http://127.0.0.1:${adminPort}/healthz`);
    expect(JSON.parse(r.body)).toEqual({ status: 'ok' });
  });

  it('SIGHUP with a valid config: new requests use it within 1 s, an in-flight request on a kept-alive connection completes', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    expect((await get('/', agent)).body).toBe('A');
    const inFlight = get('/slow');
    await sleep(100);
    fs.writeFileSync(file, JSON.stringify(config(b.address)));
    child.kill('SIGHUP');
    await sleep(1000);
    expect((await get('/', agent)).body).toBe('B'); // same kept-alive connection, new config
    expect((await inFlight).body).toBe('A');
    agent.destroy();
  });

  it('SIGHUP with an invalid config: refused with a logged reason, the old one stays', async () => {
    fs.writeFileSync(file, JSON.stringify(config(a.address, { domains: [{ name: 'site.test', upstreams: Array(17).fill(a.address) }] })));
    child.kill('SIGHUP');
    await sleep(500);
    expect(logs).toContain('config reload refused');
    expect(logs).toContain('17 upstreams, at most 16');
    expect((await get()).body).toBe('B');
  });

  it('POST /api/reload does the same through the admin API', async () => {
    const bad = await request(`http://127.0.0.1:${adminPort}/api/reload`, { method: 'POST' });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error).toContain('at most 16');
    fs.writeFileSync(file, JSON.stringify(config(a.address)));
    const good = await request(`http://127.0.0.1:${adminPort}/api/reload`, { method: 'POST' });
    expect(good.status).toBe(200);
    expect((await get()).body).toBe('A');
  });

  it('SIGTERM: stops accepting, finishes the in-flight request, exits 0', async () => {
    const inFlight = get('/slow');
    await sleep(150);
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await sleep(150);
    await expect(get('/')).rejects.toThrow(/ECONNREFUSED/);
    expect((await inFlight).body).toBe('A');
    const [code] = await exited;
    expect(code).toBe(0);
    expect(logs).toContain('"msg":"stopped"');
  });
});
