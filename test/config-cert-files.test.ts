// Black-box: a certificate file, key file or CA bundle that is readable but
// not usable (not PEM, a key of another certificate, a bundle with no
// certificate in it) is refused by `scrubber check` and at startup alike,
// naming the key and the file: `check` said "ok" to these, and the start then
// died with "cannot start: error:0480006C:PEM routines::no start line", naming
// nothing; a CA bundle without a certificate was taken silently and every
// HTTPS upstream it was meant for then failed verification.
import { beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { makePki } from './helpers/certs.ts';
import { freePort, tempDir } from './helpers/servers.ts';
import { loadConfigObject } from '../src/config/load.ts';

const BIN = path.resolve('bin/scrubber.js');
let a: { cert: string; key: string };
let b: { cert: string; key: string };
let ca: string;
let notPem: string;

beforeAll(() => {
  const pki = makePki();
  a = pki.leaf('a.test');
  b = pki.leaf('b.test');
  ca = pki.ca;
  notPem = path.join(tempDir(), 'notes.txt');
  fs.writeFileSync(notPem, 'this is not a PEM file\n');
});

const withCert = (cert: string, key: string, extra: Record<string, unknown> = {}) => ({
  listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, workers: 1,
  tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], cert, key }] },
  domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }], ...extra,
});

function check(config: unknown) {
  const file = path.join(tempDir(), 'c.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const r = spawnSync(process.execPath, [BIN, 'check', '--config', file], { encoding: 'utf8' });
  return { code: r.status, lines: r.stdout.trim().split('\n'), file };
}

describe('certificate files that cannot be used', () => {
  it('a good pair passes', () => {
    expect(check(withCert(a.cert, a.key)).code).toBe(0);
    expect(loadConfigObject(withCert(a.cert, a.key), {}).ok).toBe(true);
  });

  it('a certificate that is not PEM, a key that is not PEM, or a key of another certificate is refused naming the entry', () => {
    for (const [cert, key, file] of [[notPem, a.key, notPem], [a.cert, notPem, notPem], [a.cert, b.key, b.key]]) {
      const r = check(withCert(cert, key));
      expect(r.code, `${cert} ${key}`).toBe(2);
      expect(r.lines.length).toBe(1);
      expect(r.lines[0]).toMatch(/^tls\.certs\[0\]: /);
      expect(r.lines[0]).toContain(file);
    }
  });

  it('startup refuses it the same way: exit 2 with the same line, nothing listening', async () => {
    const port = await freePort();
    const config = withCert(a.cert, b.key, { listen: [{ host: '127.0.0.1', port }], state: { dir: tempDir() } });
    const r = check(config);
    const child = spawn(process.execPath, [BIN, '--config', r.file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(err.trim().split('\n')[0]).toBe(r.lines[0]);
  });

  it('upstream.caFile with no certificate in it is refused naming the key; a real CA passes', () => {
    const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'], upstreamTls: true }] };
    const r = check({ ...ok, upstream: { caFile: notPem } });
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([expect.stringMatching(/^upstream\.caFile: .*notes\.txt.*certificate/)]);
    expect(check({ ...ok, upstream: { caFile: ca } }).code).toBe(0);
  });
});
