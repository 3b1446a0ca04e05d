// Checks of the `filter` config section that convict cannot express (rules,
// whitelist ranges, number ranges); problems name the key. Pure.
import type { Config } from '../config/schema.ts';
import { validateRules } from './rules.ts';
import { parseWhitelistEntry } from '../decisions/lists.ts';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$/;

/** Validates and normalises cfg.filter in place (rules get their optional fields); returns the problems. */
export function validateFilterConfig(f: Config['filter']): string[] {
  const problems: string[] = [];
  const rules = validateRules(f.rules, 'filter.rules', problems);
  if (!problems.length) f.rules = rules;
  if (!Array.isArray(f.whitelist)) problems.push('filter.whitelist: must be an array of addresses or CIDR ranges');
  else f.whitelist.forEach((w, i) => {
    if (typeof w !== 'string') { problems.push(`filter.whitelist[${i}]: must be a string`); return; }
    const p = parseWhitelistEntry(w);
    if (!p.ok) problems.push(`filter.whitelist[${i}]: ${p.error}`);
  });
  const positive: [string, number][] = [
    ['filter.scoreThreshold', f.scoreThreshold], ['filter.timeScale', f.timeScale], ['filter.repeatHalfLifeHours', f.repeatHalfLifeHours],
    ['filter.attack.rateFactor', f.attack.rateFactor], ['filter.attack.latencyFactor', f.attack.latencyFactor],
    ['filter.attack.enterSeconds', f.attack.enterSeconds], ['filter.attack.exitSeconds', f.attack.exitSeconds],
    ['filter.attack.learnSeconds', f.attack.learnSeconds], ['filter.maxSources', f.maxSources],
  ];
  for (const [k, v] of positive) if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) problems.push(`${k}: must be a positive number`);
  if (!(f.repeatGrowth >= 1)) problems.push('filter.repeatGrowth: must be at least 1');
  if (!(f.attack.minRps >= 0)) problems.push('filter.attack.minRps: must be a number >= 0');
  if (!(f.attack.minLatencyMs >= 0)) problems.push('filter.attack.minLatencyMs: must be a number >= 0');
  if (!(f.attack.errorRatio > 0 && f.attack.errorRatio <= 1)) problems.push('filter.attack.errorRatio: must be in (0, 1]');
  if (!(f.attack.tighten > 0 && f.attack.tighten <= 1)) problems.push('filter.attack.tighten: must be in (0, 1]');
  if (!(f.fairShare.overShareRatio >= 1)) problems.push('filter.fairShare.overShareRatio: must be at least 1 (a source at the typical share is never over it)');
  if (!(f.fairShare.newcomerSources > 0)) problems.push('filter.fairShare.newcomerSources: must be more than 0 (0 would refuse every new client under attack; fairShare.enabled: false turns the slice off)');
  if (!TOKEN.test(f.challenge.cookieName)) problems.push('filter.challenge.cookieName: must be a cookie name (letters, digits, !#$%&\'*+-.^_`|~)');
  // A prefixed name needs Secure, which plain HTTP cannot set: browsers drop it there, and every visitor of the HTTP
  // listener would fail the challenge. Over HTTPS the proxy already names it __Secure-<name>.
  else if (/^__(host|secure)-/i.test(f.challenge.cookieName)) problems.push(`filter.challenge.cookieName: "${f.challenge.cookieName}" starts with a prefix browsers keep only from HTTPS (__Host-, __Secure-); the proxy adds __Secure- itself over HTTPS: give the name without it`);
  if (!(f.challenge.trustSeconds > 0)) problems.push('filter.challenge.trustSeconds: must be at least 1');
  if (!(f.challenge.maxNetworksPerToken >= 1)) problems.push('filter.challenge.maxNetworksPerToken: must be at least 1 (the networks one client uses: home, phone, IPv4 and IPv6)');
  const n = f.nat;
  if (!Array.isArray(n.sessionCookies)) problems.push('filter.nat.sessionCookies: must be an array of cookie names, e.g. ["sid", "PHPSESSID"]');
  else n.sessionCookies.forEach((c, i) => { if (typeof c !== 'string' || !TOKEN.test(c)) problems.push(`filter.nat.sessionCookies[${i}]: must be a cookie name (letters, digits, !#$%&'*+-.^_\`|~)`); });
  for (const k of ['maxFactor', 'cookieMaxFactor'] as const) if (!(Number.isInteger(n[k]) && n[k] >= 1)) problems.push(`filter.nat.${k}: must be a whole number of at least 1 (1 = an address is one client)`);
  if (n.cookieMaxFactor > n.maxFactor) problems.push(`filter.nat.cookieMaxFactor: must not exceed filter.nat.maxFactor (${n.maxFactor})`);
  return problems;
}
