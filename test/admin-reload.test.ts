// What a reload may change (SPEC §1, README "Signals"): a key bound at start
// (the HTTP parser's head limit, the demo origin, the statistics timer) is
// refused naming the key, and the running config stays whole; the log level
// is applied at once, in one process and in every worker. A file key that is
// not a readable regular file (a directory: readable to access(), EISDIR to
// read) is refused naming it; a config that still fails while being applied is
// refused too, with the running one still in force everywhere, and a SIGHUP
// never kills the proxy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startProxy, startWorkersCli, startOrigin, request, tempDir, until, sleep, domain, freePort, type Origin, type Proxy } from './helpers/servers.ts';
import { loadConfigObject } from '../src/config/load.ts';
import { startPrimary } from '../src/app/primary.ts';
import { createLogger } from '../src/log.ts';
import type { Config } from '../src/config/schema.ts';

/** `config` with upstream.caFile a directory (EISDIR when read) and one more domain, b.test: what a reload that went
 *  through would make visible. Given to reload() as it is, it skips the file's validation, as a file that changed
 *  between the check and the apply would. */
const failingApply = (config: Config, dir: string): Config => ({
  ...config, upstream: { ...config.upstream, caFile: dir }, domains: [...config.domains, { ...config.domains[0], name: 'b.test', aliases: [] }],
});

let origin: Origin;
beforeAll(async () => { origin = await startOrigin(); });
afterAll(async () => { await origin?.close(); });

const reload = async (adminPort: number) => {
  const r = await request(`http://127.0.0.1:${adminPort}/api/reload`, { method: 'POST' });
  return { status: r.status, json: JSON.parse(r.body) as { error?: string; status?: string } };
};

describe('reload in one process', () => {
  let proxy: Proxy;
  let file: string;
  let lines: string[];
  // The config as startProxy builds it, so that the file and the running config differ only where a test says.
  let base: Record<string, unknown>;
  const write = (extra: Record<string, unknown>) => fs.writeFileSync(file, JSON.stringify({ ...base, ...extra }));

  beforeAll(async () => {
    const dir = tempDir();
    file = path.join(dir, 'c.json');
    base = {
      listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0, token: '' }, log: { level: 'silent' },
      state: { dir: path.join(dir, 'state') }, domains: [domain('a.test', [origin.address])],
    };
    write({});
    lines = [];
    const sink = new Writable({ write(chunk, _enc, cb) { lines.push(...String(chunk).split('\n').filter(Boolean)); cb(); } });
    proxy = await startProxy(base, { configFile: file, log: pino({ level: 'silent' }, sink) });
  });
  afterAll(async () => { await proxy?.close(); });

  const refusedKeys: [string, Record<string, unknown>][] = [
    ['limits.maxHeaderBytes', { limits: { maxHeaderBytes: 4096 } }],
    ['demo', { demo: { enabled: true, host: '127.0.0.1', port: 0 } }],
    ['stats.flushIntervalMs', { stats: { flushIntervalMs: 1000 } }],
  ];
  for (const [key, extra] of refusedKeys) {
    it(`a reload that changes ${key} is refused, naming it as needing a restart; nothing changes`, async () => {
      const before = JSON.stringify(proxy.app.config);
      write({ ...extra, domains: [domain('a.test', [origin.address]), domain('b.test', [origin.address])] });
      const r = await reload(proxy.adminPort);
      expect(r.status).toBe(400);
      expect(r.json.error).toContain(`${key}: changing it needs a restart`);
      expect(JSON.stringify(proxy.app.config)).toBe(before);
      write({});
    });
  }

  it('a reload that changes log.level applies it at once', async () => {
    write({ log: { level: 'info' } });
    expect(await reload(proxy.adminPort)).toEqual({ status: 200, json: { status: 'reloaded' } });
    expect(proxy.app.log.level).toBe('info');
    // The reload's own line is written at the new level.
    expect(lines.some((l) => JSON.parse(l).msg === 'config reloaded')).toBe(true);
    write({ log: { level: 'silent' } });
    expect((await reload(proxy.adminPort)).status).toBe(200);
    expect(proxy.app.log.level).toBe('silent');
  });

  for (const [key, extra] of [
    ['upstream.caFile', (dir: string) => ({ upstream: { caFile: dir } })],
    ['tls.certs[0].cert', (dir: string) => ({ tls: { listen: [], certs: [{ domains: ['a.test'], cert: dir, key: path.join(dir, 'c.json') }] } })],
  ] as const) {
    it(`a reload naming a directory as ${key} is refused with a 400 naming the key; nothing changes`, async () => {
      const before = JSON.stringify(proxy.app.config);
      write({ ...extra(path.dirname(file)), domains: [domain('a.test', [origin.address]), domain('b.test', [origin.address])] });
      const r = await reload(proxy.adminPort);
      expect(r.status).toBe(400);
      expect(r.json.error).toContain(`${key}: ${path.dirname(file)} is not a readable file`);
      expect(JSON.stringify(proxy.app.config)).toBe(before);
      write({});
    });
  }

  it('a reload with an admin.token outside visible ASCII is refused naming admin.token; nothing changes', async () => {
    const before = JSON.stringify(proxy.app.config);
    write({ admin: { host: '127.0.0.1', port: proxy.adminPort, token: 'токен' } });
    const r = await reload(proxy.adminPort);
    expect(r.status).toBe(400);
    expect(r.json.error).toMatch(/admin\.token: .*visible ASCII/);
    expect(JSON.stringify(proxy.app.config)).toBe(before);
    write({});
    expect((await reload(proxy.adminPort)).status).toBe(200);
  });

  it('a config that still fails while being applied is refused with the reason; the running one stays in force', async () => {
    const before = JSON.stringify(proxy.app.config);
    const r = proxy.app.reload({ ok: true, config: failingApply(proxy.app.config, path.dirname(file)) });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problems.join('; ')).toMatch(/EISDIR/);
    expect(JSON.stringify(proxy.app.config)).toBe(before);
    expect((await request(proxy.url, { headers: { host: 'b.test' } })).status).toBe(421);
    expect((await request(proxy.url, { headers: { host: 'a.test' } })).status).toBe(200);
    // Nothing was left half done: a good reload afterwards goes through.
    write({ domains: [domain('a.test', [origin.address]), domain('b.test', [origin.address])] });
    expect((await reload(proxy.adminPort)).status).toBe(200);
    expect((await request(proxy.url, { headers: { host: 'b.test' } })).status).toBe(200);
    write({});
    expect((await reload(proxy.adminPort)).status).toBe(200);
  });
});

describe('reload with workers', () => {
  it('log.level reaches the primary and every worker', async () => {
    const w = await startWorkersCli('a.test', origin.address, { log: { level: 'info' } });
    try {
      const reloaded = () => w.logs().split('\n').filter((l) => l.includes('"config reloaded"')).length;
      // To warn: the reload's own info lines (the primary's and each worker's) are already below the level.
      fs.writeFileSync(w.file, JSON.stringify({ ...w.config, log: { level: 'warn' } }));
      expect((await reload(w.admin)).status).toBe(200);
      await sleep(1000);
      expect(reloaded()).toBe(0);
      // Back to info: one line from the primary and one from each worker (its lines carry "worker").
      fs.writeFileSync(w.file, JSON.stringify({ ...w.config, log: { level: 'info' } }));
      expect((await reload(w.admin)).status).toBe(200);
      expect(await until(() => reloaded() >= 3, 3000)).toBe(true);
      expect(w.logs().split('\n').filter((l) => l.includes('"config reloaded"') && l.includes('"worker":')).length).toBe(2);
    } finally {
      await w.stop();
    }
  });

  it('a directory as upstream.caFile is refused with a 400 naming the key, changing nothing in the primary or the workers; a SIGHUP with it does not kill the proxy', async () => {
    const w = await startWorkersCli('a.test', origin.address, { log: { level: 'info' } });
    try {
      const dir = path.dirname(w.file);
      fs.writeFileSync(w.file, JSON.stringify({ ...w.config, upstream: { caFile: dir }, domains: [domain('a.test', [origin.address]), domain('b.test', [origin.address])] }));
      const r = await reload(w.admin);
      expect(r.status).toBe(400);
      expect(r.json.error).toContain(`upstream.caFile: ${dir} is not a readable file`);
      // The admin API checks ?domain= against the primary's config: b.test is not in it.
      expect((await request(`http://127.0.0.1:${w.admin}/api/stats?domain=b.test`)).status).toBe(400);
      expect((await request(`http://127.0.0.1:${w.port}/`, { headers: { host: 'b.test' }, localAddress: '127.0.90.1' })).status).toBe(421);
      w.child.kill('SIGHUP');
      expect(await until(() => w.logs().split('\n').filter((l) => l.includes('config reload refused')).length >= 2 || w.child.exitCode !== null, 3000)).toBe(true);
      expect(w.child.exitCode, w.logs()).toBeNull();
      expect(w.child.signalCode).toBeNull();
      for (const ip of ['127.0.90.2', '127.0.90.3']) expect((await request(`http://127.0.0.1:${w.port}/`, { headers: { host: 'a.test' }, localAddress: ip })).status).toBe(200);
    } finally {
      await w.stop();
    }
  });

  it('a config that still fails while the primary applies it is refused; the primary and every worker keep the running one', async () => {
    const dir = tempDir(), port = await freePort(), admin = await freePort();
    const loaded = loadConfigObject({
      listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, workers: 2, log: { level: 'silent' },
      state: { dir }, shutdown: { drainTimeoutMs: 500 }, domains: [domain('a.test', [origin.address])],
    }, {});
    if (!loaded.ok) throw new Error(loaded.problems.join('\n'));
    const primary = await startPrimary(loaded.config, { log: createLogger('silent') });
    try {
      const before = JSON.stringify(primary.config);
      const r = primary.reload({ ok: true, config: failingApply(primary.config, dir) });
      expect(r.ok).toBe(false);
      expect(!r.ok && r.problems.join('; ')).toMatch(/EISDIR/);
      expect(JSON.stringify(primary.config)).toBe(before);
      expect((await request(`http://127.0.0.1:${admin}/api/stats?domain=b.test`)).status).toBe(400);
      // Sources on either worker: b.test is unknown to both, a.test served by both.
      for (const ip of ['127.0.91.1', '127.0.91.2', '127.0.91.3', '127.0.91.4']) {
        expect((await request(`http://127.0.0.1:${port}/`, { headers: { host: 'b.test' }, localAddress: ip })).status).toBe(421);
        expect((await request(`http://127.0.0.1:${port}/`, { headers: { host: 'a.test' }, localAddress: ip })).status).toBe(200);
      }
    } finally {
      await primary.close();
    }
  });
});
