// Black-box: a config section (limits, tls, upstream, filter.attack …) given as
// something other than an object is one clear line naming it. It used to come
// out as convict's internals, one line per key of the section ("configuration
// param 'limits.maxBodyBytes' missing from config, did you override its
// parent?"), a wrong "limits: unknown key", and a TypeError ("(root): Cannot
// read properties of null (reading 'maxHeaderCount')").
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfigObject } from '../src/config/load.ts';
import { tempDir } from './helpers/servers.ts';

const ok = { domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] };
const problems = (raw: Record<string, unknown>) => { const r = loadConfigObject({ ...ok, ...raw }, {}); return r.ok ? [] : r.problems; };

describe('a section that is not an object', () => {
  it('is one line naming the section, for null, a number, an array and a string, at any depth', () => {
    expect(problems({ limits: null })).toEqual(['limits: must be an object (a section of keys), not null']);
    expect(problems({ limits: 5 })).toEqual(['limits: must be an object (a section of keys), not a number']);
    expect(problems({ tls: [] })).toEqual(['tls: must be an object (a section of keys), not an array']);
    expect(problems({ filter: { attack: 'fast' } })).toEqual(['filter.attack: must be an object (a section of keys), not a string']);
  });

  it('the other problems of the config are still listed with it', () => {
    const p = problems({ upstream: true, limits: { maxBodyBytes: '10 potatoes' }, bogus: 1 });
    expect(p).toContain('upstream: must be an object (a section of keys), not a boolean');
    expect(p.some((l) => l.startsWith('limits.maxBodyBytes: '))).toBe(true);
    expect(p).toContain('bogus: unknown key');
    expect(p.every((l) => !/did you override|Cannot read/.test(l))).toBe(true);
  });

  it('scrubber check prints it and exits 2', () => {
    const file = path.join(tempDir(), 'c.json');
    fs.writeFileSync(file, JSON.stringify({ ...ok, limits: null }));
    const r = spawnSync(process.execPath, [path.resolve('bin/scrubber.js'), 'check', '--config', file], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout.trim().split('\n')).toEqual(['limits: must be an object (a section of keys), not null']);
  });
});

// convict merges an object given for a key into the key's default: `"listen": {"host": "0.0.0.0", "port": 80}` (a
// list of one written without its brackets) was taken silently as the default listener, 127.0.0.1:8080, and
// `"domains": {…}` as no domain at all; `scrubber check` said ok.
describe('a key given as an object', () => {
  it('an array key given as an object is refused naming it, not replaced by the default', () => {
    const listen = { host: '0.0.0.0', port: 80 };
    expect(problems({ listen })).toEqual(['listen: must be an array, not an object']);
    expect(loadConfigObject({ domains: { name: 'a.test', upstreams: ['127.0.0.1:1'] } }, {}).ok).toBe(false);
    expect(problems({ domains: { name: 'a.test', upstreams: ['127.0.0.1:1'] } })).toContain('domains: must be an array, not an object');
    expect(problems({ filter: { whitelist: { office: '10.1.2.3' } } })).toEqual(['filter.whitelist: must be an array, not an object']);
  });

  it('from the environment too: JSON of an object for an array key is refused naming the variable', () => {
    const r = loadConfigObject(ok, { SCRUBBER_LISTEN: '{"host":"0.0.0.0","port":80}' });
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.problems[0]).toBe('listen: must be an array (SCRUBBER_LISTEN="{\\"host\\":\\"0.0.0.0\\",\\"port\\":80}")');
    expect(r.ok ? [] : r.problems.every((l) => !/did you override|unknown key/.test(l))).toBe(true);
  });

  it('a single-value key given as an object is one line naming it', () => {
    expect(problems({ limits: { maxBodyBytes: { mb: 10 } } })).toEqual(['limits.maxBodyBytes: must be a single value (text, a number or true/false), not an object']);
    expect(problems({ admin: { host: { a: 1 } } })).toEqual(['admin.host: must be a single value (text, a number or true/false), not an object']);
  });

  it('scrubber check refuses "listen": {…} with exit 2', () => {
    const file = path.join(tempDir(), 'c.json');
    fs.writeFileSync(file, JSON.stringify({ ...ok, listen: { host: '0.0.0.0', port: 80 } }));
    const r = spawnSync(process.execPath, [path.resolve('bin/scrubber.js'), 'check', '--config', file], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout.trim().split('\n')).toEqual(['listen: must be an array, not an object']);
  });
});

describe('admin.host of the wrong type', () => {
  // The loopback check ran on it anyway and added "(root): h.toLowerCase is not a function".
  it('is one line naming the key, with no TypeError after it', () => {
    expect(problems({ admin: { host: 5 } })).toEqual(['admin.host: must be of type String: value was 5']);
    expect(problems({ admin: { host: null } })).toEqual(['admin.host: must be of type String']);
  });
});
