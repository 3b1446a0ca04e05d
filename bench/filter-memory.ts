// Memory with a million distinct sources tracked by the filter. Uses only the
// filter's public factory (createFilter → observe), so it does not depend on
// how the engine names its source table. Run with --expose-gc.
// usage: node --expose-gc bench/filter-memory.ts [--sources N] [--max-sources N] [--ipv6]
// --ipv6: the sources are IPv6 peers, one /64 each (keyed as sourceKey() keys a peer).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from './lib/proc.ts';

const { values } = parseArgs({ options: { sources: { type: 'string', default: '1000000' }, 'max-sources': { type: 'string' }, ipv6: { type: 'boolean', default: false } } });
const N = Number(values.sources);
const maxSources = values['max-sources'] ? Number(values['max-sources']) : undefined;
const { loadConfigObject } = await import('../src/config/load.ts');
const { createFilter } = await import('../src/app/build-filter.ts');
const { openStore } = await import('../src/store/db.ts');
const { createLogger } = await import('../src/log.ts');
const { sourceKey } = await import('../src/listen/source.ts');
const net = await import('node:net');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-mem-'));
const r = loadConfigObject({ log: { level: 'silent' }, state: { dir }, filter: { mode: 'off', ...(maxSources ? { maxSources } : {}) }, listen: [{ host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, domains: [{ name: 'bench.test', upstreams: ['127.0.0.1:9'] }] }, {});
if (!r.ok) { console.log(`skipped: config refused: ${r.problems.join('; ')}`); process.exit(0); }
const db = openStore(dir);
const filter = createFilter(r.config, { db, log: createLogger('silent') });
const gc = (globalThis as { gc?: () => void }).gc;
const heap = () => { gc?.(); gc?.(); return process.memoryUsage(); };
const before = heap();
const t0 = performance.now();
// Three requests per source, as a tracked source usually has; addresses 10.x.y.z or 2001:db8:x:y::1 (documentation
// ranges, not routed: only strings here). The key of an IPv6 peer is made as the listener makes it.
for (let i = 0; i < N; i++) {
  const source = values.ipv6 ? sourceKey(`2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`) : `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
  for (let k = 0; k < 3; k++) {
    filter.detector.observe({ domain: 'bench.test', source, client: source, method: 'GET', path: k ? `/static/${k}.css` : '/', status: 200, bytesIn: 300, bytesOut: 2000, durationMs: 2, contentType: k ? 'text/css' : 'text/html', outcome: 'passed', proxyReason: null, upstreamError: null, newConnection: k === 0, queuedMs: 0, upstreamMs: 2 });
  }
}
const ms = performance.now() - t0;
const after = heap();
const snap = filter.snapshot();
const grown = after.heapUsed + after.external - before.heapUsed - before.external;
console.log(`${values.ipv6 ? 'IPv6 /64s, ' : ''}filter.maxSources ${maxSources ?? 'default (' + String((r.config.filter as { maxSources?: number }).maxSources) + ')'}: ${N.toLocaleString('en')} distinct sources observed (3 requests each) in ${(ms / 1000).toFixed(1)} s: heap+external grew ${(grown / 2 ** 20).toFixed(1)} MiB (${(grown / N).toFixed(0)} B per distinct source${typeof snap.counters.sourcesTracked === 'number' ? `, ${(grown / Math.max(1, snap.counters.sourcesTracked)).toFixed(0)} B per tracked source, ${snap.counters.sourcesTracked.toLocaleString('en')} tracked` : ''}), RSS ${(after.rss / 2 ** 20).toFixed(0)} MiB; filter counters: ${JSON.stringify(snap.counters).slice(0, 300)}`);
await filter.close();
db.close();
fs.rmSync(dir, { recursive: true, force: true });
process.exit(0);
