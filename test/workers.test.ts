// Several worker processes, black-box (SPEC §9): the real `scrubber` CLI with
// `workers: 2` on real sockets. The primary hands each source to one worker:
// a flood from one address over many connections is banned and then dropped
// at accept; the per-source connection cap counts every connection of the
// source; /metrics, /api/stats and /api/workers add up both workers; SIGHUP
// reloads both; a worker killed with -9 is replaced and the bans stay.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { startOrigin, freePort, tempDir, request, rawExchange, sleep, type Origin } from './helpers/servers.ts';
import { makePki } from './helpers/certs.ts';
import { shardOf, workerConfig, type FromWorker, type WorkerInit } from '../src/cluster/protocol.ts';
import { WorkerStore } from '../src/cluster/worker-links.ts';
import type { LearnedDomain } from '../src/store/filter-store.ts';
import { loadConfigObject } from '../src/config/load.ts';

const BIN = path.resolve('bin/scrubber.js');
const HOST = 'site.test';

interface Running { child: ChildProcess; logs: string; port: number; tlsPort: number; admin: number; file: string }
let ca = '';
let proxy: Running;
let origin: Origin;
let config: Record<string, unknown>;

const api = async (method: string, p: string, body?: unknown) => {
  const r = await request(`http://127.0.0.1:${proxy.admin}${p}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  let json: any = null;
  try { json = JSON.parse(r.body); } catch { /* /metrics is text */ }
  return { status: r.status, json, text: r.body };
};
const workers = async () => (await api('GET', '/api/workers')).json.workers as { index: number; pid: number; ready: boolean; restarts: number; requests: number; rssBytes?: number; heapUsedBytes?: number; silentMs?: number }[];

function get(local: string, host = HOST, agent: http.Agent | false = false): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.port, path: '/', localAddress: agent ? undefined : local, agent, headers: { host } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
    req.setTimeout(3000, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** True when a connection from `local` is refused at accept (closed with no answer). */
const refused = async (local: string) => (await rawExchange(proxy.port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { localAddress: local, timeoutMs: 1500 })).text === '';

async function metric(name: string): Promise<number> {
  const text = (await api('GET', '/metrics')).text;
  return text.split('\n').filter((l) => l.startsWith(name)).reduce((s, l) => s + Number(l.split(' ').pop()), 0);
}

beforeAll(async () => {
  origin = await startOrigin((_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
  const dir = tempDir('scrubber-workers-');
  const port = await freePort(), admin = await freePort(), tlsPort = await freePort();
  const file = path.join(dir, 'c.json');
  const pki = makePki();
  ca = fs.readFileSync(pki.ca, 'utf8');
  config = {
    listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, workers: 2,
    tls: { listen: [{ host: '127.0.0.1', port: tlsPort }], certs: [{ domains: [HOST], ...pki.leaf(HOST) }] },
    state: { dir: path.join(dir, 'data') }, limits: { maxConnectionsPerSource: 4 }, shutdown: { drainTimeoutMs: 500 },
    domains: [{ name: HOST, upstreams: [origin.address] }],
  };
  fs.writeFileSync(file, JSON.stringify(config));
  proxy = await start({ port, tlsPort, admin, file });
}, 20_000);

async function start(p: Omit<Running, 'child' | 'logs'>): Promise<Running> {
  const child = spawn(process.execPath, [BIN, '--config', p.file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SCRUBBER_LOG_LEVEL: 'info' } });
  const r: Running = { ...p, child, logs: '' };
  child.stdout!.on('data', (d) => { r.logs += d; });
  child.stderr!.on('data', (d) => { r.logs += d; });
  for (let i = 0; i < 200 && !r.logs.includes('scrubber started'); i++) await sleep(50);
  if (!r.logs.includes('scrubber started')) throw new Error(`did not start:\n${r.logs}`);
  return r;
}

afterAll(async () => {
  if (proxy?.child.exitCode === null) {
    proxy.child.kill('SIGTERM');
    await new Promise((r) => proxy.child.once('exit', r));
  }
  await origin?.close();
});

describe('workers: 2', () => {
  it('runs two worker processes behind one admin API', async () => {
    const w = await workers();
    expect(w.map((x) => x.ready)).toEqual([true, true]);
    expect(new Set(w.map((x) => x.pid)).size).toBe(2);
    expect(w.every((x) => x.pid !== proxy.child.pid)).toBe(true);
    // What an operator reads of each: its memory and how long ago it was last heard from (it reports every second).
    for (const x of w) {
      expect(x.rssBytes).toBeGreaterThan(10 * 2 ** 20);
      expect(x.heapUsedBytes).toBeGreaterThan(0);
      expect(x.heapUsedBytes).toBeLessThan(x.rssBytes!);
      expect(x.silentMs).toBeGreaterThanOrEqual(0);
      expect(x.silentMs).toBeLessThan(3000);
    }
    expect((await api('GET', '/healthz')).json).toEqual({ status: 'ok' });
  });

  it('terminates TLS in the workers, for sources on either of them', async () => {
    const get = (local: string) => new Promise<number>((resolve) => {
      const req = https.request({ host: '127.0.0.1', port: proxy.tlsPort, path: '/', localAddress: local, servername: HOST, ca, agent: false, headers: { host: HOST } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
      req.on('error', () => resolve(0));
      req.end();
    });
    for (let i = 1; i <= 6; i++) expect(await get(`127.0.76.${i}`)).toBe(200);
  });

  it('statistics, /metrics and /api/workers add up both workers', async () => {
    const before = await metric('scrubber_requests_passed_total');
    const sources = Array.from({ length: 12 }, (_, i) => `127.0.70.${i + 1}`);
    for (const s of sources) for (let k = 0; k < 3; k++) expect(await get(s)).toBe(200);
    const w = await workers();
    // Twelve sources spread over both workers (the hash puts at least one on each).
    expect(w.every((x) => x.requests > 0)).toBe(true);
    expect(await metric('scrubber_requests_passed_total') - before).toBe(36);
    const stats = (await api('GET', `/api/stats?domain=${HOST}`)).json as { buckets: { passed: { requests: number } }[] };
    expect(stats.buckets.reduce((s, b) => s + b.passed.requests, 0)).toBeGreaterThanOrEqual(36);
  });

  it('a flood from one address over many connections is banned once and then dropped at accept', async () => {
    const ip = '127.0.71.1';
    const before = (await workers()).map((x) => x.requests);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: ip });
    const t0 = Date.now();
    let banned = false;
    while (!banned && Date.now() - t0 < 8000) {
      const statuses = await Promise.all(Array.from({ length: 40 }, () => get(ip, HOST, agent)));
      banned = statuses.includes(0);
    }
    agent.destroy();
    expect(banned).toBe(true);
    const entry = (await api('GET', `/api/blacklist/${ip}`)).json;
    expect(entry).toMatchObject({ listed: true, rule: 'rate-extreme' });
    // Every request of the source went to one worker: it alone judged it, with the whole history.
    const after = (await workers()).map((x) => x.requests);
    expect(after.filter((n, i) => n > before[i]).length).toBe(1);
    const droppedBefore = await metric('scrubber_connections_dropped_at_accept_total');
    expect(await refused(ip)).toBe(true);
    expect(await metric('scrubber_connections_dropped_at_accept_total')).toBeGreaterThan(droppedBefore);
    expect(await get('127.0.71.2')).toBe(200);
  }, 15_000);

  it('the per-source connection cap counts every connection of the source', async () => {
    const open = (local: string) => new Promise<{ s: net.Socket; answered: boolean }>((resolve) => {
      const s = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: local });
      s.on('error', () => {});
      s.on('connect', () => s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
      s.once('data', () => resolve({ s, answered: true }));
      s.on('close', () => resolve({ s, answered: false }));
      setTimeout(() => resolve({ s, answered: false }), 2000);
    });
    // Held busy: a request head still coming (an idle keep-alive would be closed to make room at the cap).
    const busy = (local: string) => new Promise<net.Socket>((resolve) => {
      const s = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: local });
      s.on('error', () => {});
      s.on('connect', () => { s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`); resolve(s); });
    });
    const held = [];
    for (let i = 0; i < 4; i++) held.push({ s: await busy('127.0.72.1') });
    await sleep(200);
    expect(held.every((h) => !h.s.destroyed)).toBe(true);
    const fifth = await open('127.0.72.1');
    expect(fifth.answered).toBe(false);
    const other = await open('127.0.72.2');
    expect(other.answered).toBe(true);
    for (const h of [...held, fifth, other]) h.s.destroy();
  });

  it('SIGHUP reloads every worker', async () => {
    const next = { ...config, domains: [...(config.domains as object[]), { name: 'other.test', upstreams: [origin.address] }] };
    fs.writeFileSync(proxy.file, JSON.stringify(next));
    const sources = Array.from({ length: 8 }, (_, i) => `127.0.74.${i + 1}`);
    expect(await get(sources[0], 'other.test')).toBe(421);
    proxy.child.kill('SIGHUP');
    await sleep(1000);
    for (const s of sources) expect(await get(s, 'other.test')).toBe(200);
    expect(proxy.logs).toMatch(/"worker":0,[^\n]*"msg":"config reloaded"/);
    expect(proxy.logs).toMatch(/"worker":1,[^\n]*"msg":"config reloaded"/);
  });

  it('a worker killed with -9 is replaced, and the bans stay in force', async () => {
    expect((await api('PUT', '/api/blacklist/127.0.73.1', { ttlSeconds: 600, reason: 'test' })).status).toBe(200);
    expect(await refused('127.0.73.1')).toBe(true);
    const [victim] = await workers();
    process.kill(victim.pid, 'SIGKILL');
    let w = await workers();
    for (let i = 0; i < 100 && !(w[victim.index].pid !== victim.pid && w[victim.index].ready); i++) { await sleep(50); w = await workers(); }
    expect(w[victim.index]).toMatchObject({ ready: true, restarts: 1 });
    expect(w[victim.index].pid).not.toBe(victim.pid);
    expect(await refused('127.0.73.1')).toBe(true);
    expect(await refused('127.0.71.1')).toBe(true);
    const list = (await api('GET', '/api/blacklist')).json.entries.map((e: { ip: string }) => e.ip);
    expect(list).toEqual(expect.arrayContaining(['127.0.71.1', '127.0.73.1']));
    for (let i = 1; i <= 8; i++) expect(await get(`127.0.75.${i}`)).toBe(200);
  }, 15_000);

  it('an unban reaches every worker: the source is served again', async () => {
    expect((await api('DELETE', '/api/blacklist/127.0.73.1')).status).toBe(200);
    expect(await get('127.0.73.1')).toBe(200);
  });

  it('SIGTERM drains the workers and exits 0 with nothing counted lost', async () => {
    const passed = async () => ((await api('GET', `/api/stats?domain=${HOST}`)).json as { buckets: { passed: { requests: number } }[] }).buckets.reduce((n, b) => n + b.passed.requests, 0);
    const before = await passed();
    // Counted by the workers and not yet reported when the signal comes: their last report must reach the store.
    for (let i = 1; i <= 6; i++) expect(await get(`127.0.77.${i}`)).toBe(200);
    const pids = (await workers()).map((w) => w.pid);
    proxy.child.kill('SIGTERM');
    const code = await new Promise((r) => proxy.child.once('exit', (c) => r(c)));
    expect(code).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    proxy = await start(proxy);
    expect(await passed()).toBe(before + 6);
  }, 20_000);
});

/** A loaded config, or the test fails with its problems. */
function configOf(raw: Record<string, unknown>) {
  const r = loadConfigObject(raw);
  if (!r.ok) throw new Error(r.problems.join('; '));
  return r.config;
}

describe('sharding (pure)', () => {
  it('sends a source always to the same worker, and spreads many sources over all of them', () => {
    expect(shardOf('203.0.113.7', 4)).toBe(shardOf('203.0.113.7', 4));
    const seen = new Set(Array.from({ length: 200 }, (_, i) => shardOf(`10.0.${i >> 8}.${i & 255}`, 4)));
    expect(seen.size).toBe(4);
  });

  it('shares out the limits that bound a whole process, and keeps the per-source ones', () => {
    const w = workerConfig(configOf({ limits: { postBudgetBytes: 1000, maxBodyBytes: 100, maxConnectionsPerSource: 64 }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'], maxInflight: 5 }] }), 2);
    expect(w.limits.postBudgetBytes).toBe(500);
    expect(w.domains[0].maxInflight).toBe(3);
    expect(w.limits.maxConnectionsPerSource).toBe(64);
    expect(w.demo.enabled).toBe(false);
  });

  it('never shares the POST budget below one largest body: a worker takes any upload one process would', () => {
    // A chunked body reserves limits.maxBodyBytes: with the defaults (10 MiB, a budget of 256 MiB) a share on 26 cores
    // or more was below it, and every chunked upload on the node was refused on an idle proxy.
    const c = configOf({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] });
    expect(workerConfig(c, 32).limits.postBudgetBytes).toBe(c.limits.maxBodyBytes);
    expect(workerConfig(configOf({ limits: { postBudgetBytes: 1500, maxBodyBytes: 1000 }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] }), 2).limits.postBudgetBytes).toBe(1000);
    // A budget smaller than one body stays what it is (such a body is refused by one process too).
    expect(workerConfig(configOf({ limits: { postBudgetBytes: 600, maxBodyBytes: 1000 }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] }), 2).limits.postBudgetBytes).toBe(600);
  });

  it("shares out the adaptive limit's floor and start: the workers' limits add up to one process's, however many cores", () => {
    // Each worker learns its own limit against the same origin: unshared, 16 workers would hold a small origin to at
    // least 16 × minLimit requests at once, and the limit would never bind (no queue in front, no people first).
    const c = configOf({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] });
    const a = c.limits.adaptive;
    expect([a.minLimit, a.initialLimit]).toEqual([8, 20]);
    const two = workerConfig(c, 2).limits.adaptive;
    expect([two.minLimit, two.initialLimit, two.enabled]).toEqual([4, 10, true]);
    const many = workerConfig(c, 16).limits.adaptive;
    expect([many.minLimit, many.initialLimit]).toEqual([1, 2]);
    expect(workerConfig(c, 1).limits.adaptive).toEqual(a);
  });

  it("shares out the newcomers' slice: each worker's newcomers are a share of the node's", () => {
    const c = configOf({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] });
    expect(c.filter.fairShare.newcomerSources).toBe(1);
    expect(workerConfig(c, 2).filter.fairShare.newcomerSources).toBe(0.5);
    expect(workerConfig(c, 16).filter.fairShare.newcomerSources).toBe(1 / 16);
  });

  it('stores the rate baseline a worker learned as the whole node\'s, and gives a worker its share back', () => {
    // Each worker sees its share of a domain's requests and learns that rate; the store keeps one baseline per
    // domain. Stored as the worker's share, a restart with another `workers` count (or one process) would judge the
    // rate against a baseline off by that factor until relearned.
    const learned = (rps: number): LearnedDomain => ({ savedAt: 1, staticPaths: [], bodySizes: [], attack: { baselineRps: rps, baselineLatencyMs: 40, learned: 600, under: false, since: 0, upstreamFailing: false, reason: '' } });
    const init = (workers: number, stored: number): WorkerInit => ({ index: 0, workers, config: {} as WorkerInit['config'], bans: [], whitelist: [], offenders: [], learned: [['a.test', learned(stored)]], secret: '', ticketKey: '', health: [], attacks: [], files: [], revokedTokens: [] });
    const sent: FromWorker[] = [];
    new WorkerStore(init(2, 0), (m) => sent.push(m)).putLearned('a.test', learned(50));
    expect(sent).toEqual([{ t: 'learned', domain: 'a.test', l: learned(100) }]);
    expect(new WorkerStore(init(2, 100), () => {}).loadLearned().get('a.test')).toEqual(learned(50));
    expect(new WorkerStore(init(4, 100), () => {}).loadLearned().get('a.test')!.attack.baselineRps).toBe(25);
    // What else was learned is not a rate: it is kept as it is (the latency is the origin's, the same in every worker).
    expect(new WorkerStore(init(4, 100), () => {}).loadLearned().get('a.test')!.attack.baselineLatencyMs).toBe(40);
    // Nor are the endpoints' usual latencies (the adaptive limit's, kept across a restart): they go up and come down whole.
    const endpoints: [string, number][] = [['GET /search', 101.5], ['GET /', 2]];
    const up: FromWorker[] = [];
    new WorkerStore(init(2, 0), (m) => up.push(m)).putLearned('a.test', { ...learned(50), endpoints });
    expect(up[0]).toMatchObject({ t: 'learned', l: { endpoints } });
    const down = { ...init(4, 100), learned: [['a.test', { ...learned(100), endpoints }]] as WorkerInit['learned'] };
    expect(new WorkerStore(down, () => {}).loadLearned().get('a.test')!.endpoints).toEqual(endpoints);
  });
});
