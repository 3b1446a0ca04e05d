// What a reload may change (SPEC §1, README "Signals"): a key bound at start
// (the HTTP parser's head limit, the demo origin, the statistics timer) is
// refused naming the key, and the running config stays whole; the log level
// is applied at once, in one process and in every worker.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startProxy, startWorkersCli, startOrigin, request, tempDir, until, sleep, domain, type Origin, type Proxy } from './helpers/servers.ts';

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
});
