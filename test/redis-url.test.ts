// A `state.redis.url` the node could not use is refused by `scrubber check`
// naming the key (SPEC §1), as the node refuses it at start: a port past 65535
// (the client said "Invalid URL" at start, naming nothing) and a database that
// is not a number (the client sent SELECT NaN, which Redis refused after the
// connection was made: the node died on an unhandled error with a stack
// trace). Both passed `check` before 2026-11-29. And a database number the
// server does not have: refused on connect, the client went on in database 0.
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, tempDir, request, sleep } from './helpers/servers.ts';
import { Redis } from 'ioredis';
import { findRedisServer, startRedis } from './helpers/redis.ts';

const BIN = path.resolve('bin/scrubber.js');
const HOST = 'site.test';
const hasRedis = findRedisServer() !== null;

describe('a bad state.redis.url', () => {
  const checkOf = (url: string) => {
    const dir = tempDir('scrubber-redis-url-');
    const file = path.join(dir, 'c.json');
    fs.writeFileSync(file, JSON.stringify({
      workers: 1, listen: [{ host: '127.0.0.1', port: 1 }], admin: { host: '127.0.0.1', port: 2 },
      state: { dir: path.join(dir, 'data'), redis: { url } }, domains: [{ name: HOST, upstreams: ['127.0.0.1:3'] }],
    }));
    const r = spawnSync(process.execPath, [BIN, 'check', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    fs.rmSync(dir, { recursive: true, force: true });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };

  for (const url of ['redis://127.0.0.1:99999', 'redis://127.0.0.1:6379/abc']) {
    it(`scrubber check refuses ${url}, naming state.redis.url (the node cannot start on it)`, () => {
      const r = checkOf(url);
      expect(r.status, r.out).toBe(2);
      expect(r.out).toMatch(/state\.redis\.url/);
    });
  }

  it.skipIf(!hasRedis)('a node started on a redis URL whose database is not a number says which key is wrong, with no stack trace', async () => {
    const redis = await startRedis();
    const dir = tempDir('scrubber-redis-url-');
    try {
      const file = path.join(dir, 'c.json');
      fs.writeFileSync(file, JSON.stringify({
        workers: 1, listen: [{ host: '127.0.0.1', port: await freePort() }], admin: { host: '127.0.0.1', port: await freePort() },
        state: { dir: path.join(dir, 'data'), redis: { url: `${redis.url}/abc` } }, domains: [{ name: HOST, upstreams: ['127.0.0.1:3'] }],
      }));
      const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.on('data', (d) => { out += d; });
      child.stderr!.on('data', (d) => { out += d; });
      const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      expect(out).not.toMatch(/ReplyError|    at /);
      expect(out).toMatch(/state\.redis\.url/);
      expect(code).not.toBe(0);
    } finally {
      await redis.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);

  // A database the server does not have (16 by default) passes `check` (Redis may be configured with more): the
  // client's SELECT is refused on connect, and ioredis went on in database 0, writing the node's bans there.
  it.skipIf(!hasRedis)('a node on a database the Redis server does not have writes nothing to database 0, says which key is wrong, and runs degraded', async () => {
    const redis = await startRedis();
    const dir = tempDir('scrubber-redis-url-');
    const port = await freePort(), admin = await freePort();
    const file = path.join(dir, 'c.json');
    fs.writeFileSync(file, JSON.stringify({
      workers: 1, listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin },
      state: { dir: path.join(dir, 'data'), redis: { url: `${redis.url}/99` } }, domains: [{ name: HOST, upstreams: ['127.0.0.1:3'] }],
    }));
    const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => { out += d; });
    child.stderr!.on('data', (d) => { out += d; });
    const raw = new Redis(redis.url);
    try {
      for (let i = 0; i < 200 && !out.includes('scrubber started'); i++) await sleep(50);
      const ban = await request(`http://127.0.0.1:${admin}/api/blacklist/127.0.85.1`, { method: 'PUT', body: JSON.stringify({ ttlSeconds: 600, reason: 'test' }), headers: { 'content-type': 'application/json' } });
      expect(ban.status).toBe(200);
      await sleep(500);
      const health = JSON.parse((await request(`http://127.0.0.1:${admin}/healthz`)).body).status;
      expect({ keysInDb0: await raw.dbsize(), health, named: /state\.redis\.url: Redis refused the database/.test(out) }).toEqual({ keysInDb0: 0, health: 'degraded', named: true });
    } finally {
      raw.disconnect();
      child.kill('SIGKILL');
      await redis.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);
});

