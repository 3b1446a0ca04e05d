// One TLS session ticket key for the whole proxy (listen/ticket-keys.ts): a
// client resumes its session on any worker, on another node of the same Redis,
// and on this node after a restart; the key changes each period, the same on
// every node. Real `scrubber` processes, a real redis-server, Node's TLS client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import net from 'node:net';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { startOrigin, tempDir, sleep, type Origin } from './helpers/servers.ts';
import { findRedisServer, startRedis, type RedisServer } from './helpers/redis.ts';
import { makePki, type TestPki } from './helpers/certs.ts';
import { openStore } from '../src/store/db.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { RedisBus } from '../src/store/redis-bus.ts';
import { TicketKeys, ticketPeriod } from '../src/listen/ticket-keys.ts';
import { loadConfigObject } from '../src/config/load.ts';

const BIN = path.resolve('bin/scrubber.js');
const hasRedis = findRedisServer() !== null;
const silent = { info() {}, warn() {} };

interface Node { port: number; file: string; child: ChildProcess; logs: string }

/** Every port is 0 (the kernel's choice: no race with other tests for a port found free); the TLS one is read from
 *  the start line of the log. */
async function startNode(file: string): Promise<Node> {
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SCRUBBER_LOG_LEVEL: 'info' } });
  const node: Node = { port: 0, file, child, logs: '' };
  child.stdout!.on('data', (d) => { node.logs += d; });
  child.stderr!.on('data', (d) => { node.logs += d; });
  for (let i = 0; i < 200 && !node.logs.includes('scrubber started'); i++) await sleep(50);
  const line = node.logs.split('\n').find((l) => l.includes('scrubber started'));
  if (!line) throw new Error(`node did not start:\n${node.logs}`);
  node.port = (JSON.parse(line) as { listen: { port: number; tls: boolean }[] }).listen.find((l) => l.tls)!.port;
  return node;
}

async function stopNode(n: Node): Promise<void> {
  if (n.child.exitCode !== null) return;
  n.child.kill('SIGTERM');
  await new Promise((r) => n.child.once('exit', r));
}

let pki: TestPki;
let leaf: { cert: string; key: string };
let origin: Origin;
beforeAll(async () => { pki = makePki(); leaf = pki.leaf('a.test'); origin = await startOrigin((_q, r) => r.end('ok')); });
afterAll(async () => { await origin?.close(); });

/** A node terminating a.test with `workers` processes; `redis`: on that Redis. */
async function makeNode(name: string, workers: number, redis?: string): Promise<Node> {
  const dir = tempDir(`scrubber-tickets-${name}-`);
  const file = path.join(dir, 'c.json');
  fs.writeFileSync(file, JSON.stringify({
    listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, workers,
    tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...leaf }] },
    state: { dir: path.join(dir, 'data'), ...(redis ? { redis: { url: redis } } : {}) },
    shutdown: { drainTimeoutMs: 300 }, domains: [{ name: 'a.test', upstreams: [origin.address] }],
  }));
  return startNode(file);
}

/** A TLS connection from `local`, offering `session`: whether it was resumed, and the ticket it was given. */
function connect(port: number, local: string, session?: Buffer): Promise<{ reused: boolean; ticket: Promise<Buffer> }> {
  return new Promise((resolve, reject) => {
    // (localAddress goes through to net.connect; tls.ConnectionOptions does not list it.)
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca: fs.readFileSync(pki.ca), session, ...({ localAddress: local } as object) });
    const ticket = new Promise<Buffer>((r) => s.once('session', r));
    s.on('error', reject);
    s.once('secureConnect', () => {
      const reused = s.isSessionReused();
      void Promise.race([ticket, sleep(300)]).then(() => s.end());
      resolve({ reused, ticket });
    });
  });
}

/** Of these source addresses (with two workers, they land on both), the ones that did not resume with `ticket`. */
async function notResumed(port: number, ticket: Buffer, locals: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const l of locals) if (!(await connect(port, l, ticket)).reused) out.push(l);
  return out;
}
const LOCALS = Array.from({ length: 8 }, (_, i) => `127.0.77.${i + 1}`);

describe.skipIf(!hasRedis)('one session ticket key for every worker and every node on one Redis', () => {
  let redis: RedisServer;
  let a: Node, b: Node;
  beforeAll(async () => {
    redis = await startRedis();
    a = await makeNode('a', 2, redis.url);
    b = await makeNode('b', 1, redis.url); // one process: another command line than a's workers
  }, 30_000);
  afterAll(async () => {
    for (const n of [a, b]) n?.child.kill('SIGKILL');
    await redis?.close();
  });

  it('a session sealed by one worker of one node resumes on every worker of it, on the other node, and after a restart', async () => {
    const first = await connect(a.port, LOCALS[0]);
    expect(first.reused).toBe(false);
    const ticket = await first.ticket;
    expect(await notResumed(a.port, ticket, LOCALS)).toEqual([]);
    expect(await notResumed(b.port, ticket, LOCALS)).toEqual([]);
    await stopNode(a);
    a = await startNode(a.file);
    expect(await notResumed(a.port, ticket, LOCALS)).toEqual([]);
  }, 30_000);

  it('a key put in Redis for the period is taken up by every worker of a running node within seconds (sent to them)', async () => {
    // A TLS server of the test's own, sealing tickets with a key it chose: a node resumes them only with that key.
    const key = crypto.randomBytes(48);
    const own = tls.createServer({ key: fs.readFileSync(leaf.key), cert: fs.readFileSync(leaf.cert), ticketKeys: key, sessionIdContext: 'scrubber' }, (s) => { s.on('error', () => {}); s.resume(); });
    own.listen(0, '127.0.0.1');
    await once(own, 'listening');
    const raw = new Redis(redis.url);
    try {
      const ticket = await (await connect((own.address() as net.AddressInfo).port, LOCALS[0])).ticket;
      expect(await notResumed(a.port, ticket, LOCALS)).toEqual(LOCALS);
      await raw.set(`scrubber:tls-ticket:${ticketPeriod(Date.now(), 43_200_000)}`, key, 'PX', 60_000);
      const t0 = Date.now();
      while ((await notResumed(a.port, ticket, LOCALS)).length > 0 && Date.now() - t0 < 8000) await sleep(250);
      expect(await notResumed(a.port, ticket, LOCALS)).toEqual([]);
    } finally {
      raw.disconnect();
      own.close();
    }
  }, 20_000);

  it('the key lives in Redis for two periods (12 h each by default), then is gone', async () => {
    const raw = new Redis(redis.url);
    try {
      const key = `scrubber:tls-ticket:${ticketPeriod(Date.now(), 43_200_000)}`;
      expect((await raw.getBuffer(key))?.length).toBe(48);
      const ttl = await raw.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(2 * 43_200_000);
    } finally { raw.disconnect(); }
  });
});

describe('a node alone', () => {
  it('resumes sessions after a restart within the period (the key is kept in its store)', async () => {
    let n = await makeNode('alone', 1);
    try {
      const ticket = await (await connect(n.port, '127.0.78.1')).ticket;
      await stopNode(n);
      n = await startNode(n.file);
      expect(await notResumed(n.port, ticket, ['127.0.78.1', '127.0.78.2'])).toEqual([]);
    } finally { n.child.kill('SIGKILL'); }
  }, 30_000);
});

describe.skipIf(!hasRedis)('rotation (clock injected, real stores and a real Redis)', () => {
  let redis: RedisServer;
  beforeAll(async () => { redis = await startRedis(); });
  afterAll(async () => { await redis?.close(); });

  const ROTATE = 60_000;
  function node(name: string, clock: { t: number }, bus: RedisBus | null) {
    const store = new SqliteFilterStore(openStore(tempDir(`scrubber-tk-${name}-`)));
    const applied: Buffer[] = [], warned: string[] = [];
    const keys = new TicketKeys({ rotateMs: ROTATE, now: () => clock.t, store, shared: bus ? (p, t, m) => bus.ticketKey(p, t, m) : undefined, apply: (k) => applied.push(k), log: { warn: (_o, m) => warned.push(m ?? '') } });
    return { keys, applied, store, warned };
  }

  it('every node changes key at the same period, to the same key; a node cut off uses its own and takes the shared one back', async () => {
    const busA = new RedisBus({ url: redis.url, logger: silent }), busB = new RedisBus({ url: redis.url, logger: silent });
    try {
      await Promise.all([busA.secret(Buffer.alloc(32, 1)), busB.secret(Buffer.alloc(32, 1))]); // connected
      const clock = { t: 1_800_000_000_000 };
      const a = node('a', clock, busA), b = node('b', clock, busB);
      const k1 = await a.keys.refresh();
      expect(await b.keys.refresh()).toEqual(k1);
      expect(a.applied).toEqual([k1]);
      // The same period: nothing changes, nothing is applied again.
      clock.t += ROTATE / 2;
      await a.keys.refresh();
      expect(a.applied.length).toBe(1);
      clock.t += ROTATE;
      const k2 = await a.keys.refresh();
      expect(k2).not.toEqual(k1);
      expect(await b.keys.refresh()).toEqual(k2);
      // Redis away at the next change: each node seals with a key of its own (it cannot wait for Redis)...
      await redis.stop();
      await until(() => !busA.healthy && !busB.healthy);
      clock.t += ROTATE;
      const ownA = await a.keys.refresh(), ownB = await b.keys.refresh();
      expect(ownA).not.toEqual(k2);
      expect(ownA).not.toEqual(ownB);
      // Said once, not at every check while it lasts.
      await a.keys.refresh();
      expect(a.warned).toEqual(['tls: the shared session ticket key could not be had; this node seals with its own until it can']);
      // ...and once it is back, the first to offer its own makes it the cluster's, and the other takes it.
      await redis.restart();
      await until(() => busA.healthy && busB.healthy);
      expect(await a.keys.refresh()).toEqual(ownA);
      expect(await b.keys.refresh()).toEqual(ownA);
      expect(b.applied.at(-1)).toEqual(ownA);
    } finally {
      await busA.close(); await busB.close();
    }
  }, 30_000);

  it('changes key by itself at each change of period once started, and not after stop()', async () => {
    const applied: Buffer[] = [];
    const store = new SqliteFilterStore(openStore(tempDir('scrubber-tk-timer-')));
    // Periods of 300 ms of the real clock.
    const keys = new TicketKeys({ rotateMs: 300, now: Date.now, store, apply: (k) => applied.push(k), log: silent });
    await keys.refresh();
    keys.start();
    await sleep(1000);
    keys.stop();
    expect(applied.length).toBeGreaterThanOrEqual(3);
    expect(new Set(applied.map((k) => k.toString('hex'))).size).toBe(applied.length);
    const n = applied.length;
    await sleep(700);
    expect(applied.length).toBe(n);
  });

  it('a refresh still waiting for the shared key when stop() comes puts nothing in use and saves nothing', async () => {
    const applied: Buffer[] = [], saved: number[] = [];
    let answer: (k: Buffer) => void = () => {};
    const store = { loadTicketKey: () => null, saveTicketKey: (p: number) => { saved.push(p); } };
    const keys = new TicketKeys({ rotateMs: ROTATE, now: () => 1_800_000_000_000, store, shared: () => new Promise<Buffer>((r) => { answer = r; }), apply: (k) => applied.push(k), log: silent });
    const refreshing = keys.refresh();
    keys.stop(); // shutdown: the store closes next
    answer(Buffer.alloc(48, 7));
    await refreshing;
    expect(applied).toEqual([]);
    expect(saved).toEqual([]);
  });

  it('a store that fails costs the key nothing: it is used, and a warning says why', async () => {
    const warned: string[] = [];
    const broken = { loadTicketKey(): never { throw new Error('disk gone'); }, saveTicketKey(): never { throw new Error('disk gone'); } };
    const applied: Buffer[] = [];
    const keys = new TicketKeys({ rotateMs: ROTATE, now: () => 1_800_000_000_000, store: broken, apply: (k) => applied.push(k), log: { warn: (_o, m) => warned.push(m ?? '') } });
    const k = await keys.refresh();
    expect(k.length).toBe(48);
    expect(applied).toEqual([k]);
    expect(warned).toEqual(['tls: the session ticket key could not be read from the store', 'tls: the session ticket key could not be saved']);
  });

  it('a restart within the period keeps the key; in the next period it is a new one', async () => {
    const clock = { t: 1_800_000_000_000 };
    const first = node('r', clock, null);
    const k = await first.keys.refresh();
    const again = new TicketKeys({ rotateMs: ROTATE, now: () => clock.t + 1000, store: first.store, apply: () => {}, log: silent });
    expect(await again.refresh()).toEqual(k);
    const next = new TicketKeys({ rotateMs: ROTATE, now: () => clock.t + ROTATE, store: first.store, apply: () => {}, log: silent });
    expect(await next.refresh()).not.toEqual(k);
  });
});

describe('tls.ticketKeyRotateSeconds', () => {
  it('is 12 h by default, and at least 60', () => {
    const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] };
    const r = loadConfigObject(ok);
    expect(r.ok && r.config.tls.ticketKeyRotateSeconds).toBe(43_200);
    expect(loadConfigObject({ ...ok, tls: { ticketKeyRotateSeconds: 60 } }).ok).toBe(true);
    const bad = loadConfigObject({ ...ok, tls: { ticketKeyRotateSeconds: 59 } });
    expect(bad.ok ? [] : bad.problems).toEqual(['tls.ticketKeyRotateSeconds: must be at least 60 (was 59)']);
  });
});

describe('tls.handshakeTimeoutMs', () => {
  it('0 is refused: it would leave a TLS handshake (or a connection that never sends one) without a deadline', () => {
    const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] };
    expect(loadConfigObject({ ...ok, tls: { handshakeTimeoutMs: 1 } }).ok).toBe(true);
    const bad = loadConfigObject({ ...ok, tls: { handshakeTimeoutMs: 0 } });
    expect(bad.ok ? [] : bad.problems).toEqual(['tls.handshakeTimeoutMs: must be at least 1 (0 would leave TLS handshakes without a deadline)']);
  });
});

async function until(f: () => boolean, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!f()) { if (Date.now() - t0 > ms) throw new Error('timed out'); await sleep(25); }
}

