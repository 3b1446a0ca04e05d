// Black-box: the real CLI started on a state.dir it cannot use (issue 12,
// item 9). Startup fails with exit 1 and one line on stderr that names the
// directory or the file, and no stack trace. Read-only cases need a user the
// kernel holds to permissions: under root the CLI runs as nobody (65534).
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { DatabaseSync } from 'node:sqlite';
import { tempDir } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');
const isRoot = process.getuid?.() === 0;
const asUser = isRoot ? { uid: 65534, gid: 65534 } : {};

/** A test folder the unprivileged user can enter (mkdtemp makes it 0700). */
function folder(): string {
  const d = tempDir('scrubber-store-');
  fs.chmodSync(d, 0o755);
  return d;
}

async function start(stateDir: string, opts: { asUser?: boolean } = {}): Promise<{ code: number | null; err: string }> {
  const file = path.join(folder(), 'c.json');
  fs.writeFileSync(file, JSON.stringify({
    listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, log: { level: 'silent' },
    state: { dir: stateDir }, domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }],
  }));
  fs.chmodSync(file, 0o644);
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.asUser ? asUser : {}) });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  // A start that succeeds would run on: bounded, and killed by its own pid.
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const [code] = await once(child, 'exit');
  clearTimeout(timer);
  return { code, err };
}

function expectOneClearLine(r: { code: number | null; err: string }, names: string): void {
  expect(r.code).toBe(1);
  const lines = r.err.trim().split('\n');
  expect(lines, r.err).toHaveLength(1);
  expect(lines[0]).toMatch(/^state\.dir: /);
  expect(lines[0]).toContain(names);
  expect(r.err).not.toMatch(/^\s+at /m);
}

describe('a state.dir the store cannot use', () => {
  it('a corrupted database file: the file is named', async () => {
    const dir = folder();
    fs.writeFileSync(path.join(dir, 'scrubber.db'), Buffer.alloc(8192, 0x5a));
    expectOneClearLine(await start(dir), path.join(dir, 'scrubber.db'));
  });

  it('a database whose pages are damaged after a valid header: the file is named', async () => {
    const dir = folder();
    const file = path.join(dir, 'scrubber.db');
    const db = new DatabaseSync(file);
    db.exec('CREATE TABLE filter_bans (ip TEXT PRIMARY KEY, reason TEXT NOT NULL, rule TEXT NOT NULL, since INTEGER NOT NULL, expires_at INTEGER NOT NULL)');
    db.close();
    // Page 1 keeps the header; the schema on it now points at garbage.
    const bytes = fs.readFileSync(file);
    bytes.fill(0xa5, 100);
    fs.writeFileSync(file, bytes);
    expectOneClearLine(await start(dir), file);
  });

  it('state.dir is a file, not a folder: the folder is named', async () => {
    const dir = path.join(folder(), 'state');
    fs.writeFileSync(dir, 'not a folder');
    expectOneClearLine(await start(dir), dir);
  });

  it('a read-only state.dir: the folder is named', async () => {
    const dir = path.join(folder(), 'state');
    fs.mkdirSync(dir, { mode: 0o555 });
    fs.chmodSync(dir, 0o555);
    expectOneClearLine(await start(dir, { asUser: true }), dir);
  });

  it('a read-only database file in a writable folder: the file is named', async () => {
    const dir = folder();
    const file = path.join(dir, 'scrubber.db');
    new DatabaseSync(file).close();
    fs.chmodSync(dir, 0o777);
    fs.chmodSync(file, 0o444);
    expectOneClearLine(await start(dir, { asUser: true }), file);
  });
});
