// An address can be whitelisted twice: through the API, and in the config
// (added there later, then reloaded or restarted). The two were one entry, held
// as the API's, so a DELETE through the API removed the config's whitelisting
// too: the source could be banned, though filter.whitelist still lists it, until
// the next reload. Removing the API entry leaves the config entry in force.
// Pure classes on an injected clock; the store is a real one in a temp folder.
import { describe, expect, it } from 'vitest';
import { Decisions } from '../src/decisions/decisions.ts';
import { parseWhitelistEntry } from '../src/decisions/lists.ts';
import { openStore } from '../src/store/db.ts';
import { SqliteFilterStore } from '../src/store/filter-store.ts';
import { createLogger } from '../src/log.ts';
import { tempDir } from './helpers/servers.ts';

const T = 1_800_000_000_000;
const POLICY = { repeatGrowth: 2, repeatHalfLifeHours: 24, timeScale: 1, maxSources: 1000 };
const IP = '192.0.2.10';

function range(text: string) {
  const p = parseWhitelistEntry(text);
  if (!p.ok) throw new Error(p.error);
  return p.value;
}

describe('a whitelist entry both in the config and from the API', () => {
  it('added to the config by a reload: removing the API entry leaves the config entry', () => {
    const d = new Decisions(POLICY, [], { store: new SqliteFilterStore(openStore(tempDir())), log: createLogger('silent') }, T);
    d.addWhitelist(range(IP), 'partner', T);
    d.reconfigure(POLICY, [IP], T + 1);
    expect(d.removeWhitelist(IP, T + 2)).toBe(true);
    expect(d.isWhitelisted(IP)).toBe(true);
    expect(d.whitelistEntry(IP)?.origin).toBe('config');
  });

  it('in the config at start, the API entry from the store: removing the API entry leaves the config entry', () => {
    const dir = tempDir();
    const store = new SqliteFilterStore(openStore(dir));
    const before = new Decisions(POLICY, [], { store, log: createLogger('silent') }, T);
    before.addWhitelist(range(IP), 'partner', T);
    const d = new Decisions(POLICY, [IP], { store, log: createLogger('silent') }, T + 1000);
    expect(d.removeWhitelist(IP, T + 2000)).toBe(true);
    expect(d.isWhitelisted(IP)).toBe(true);
    // Gone from the store: a start with the config entry removed no longer whitelists it.
    expect(new Decisions(POLICY, [], { store, log: createLogger('silent') }, T + 3000).isWhitelisted(IP)).toBe(false);
  });
});
