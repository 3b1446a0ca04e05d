// An upstream that goes down, and comes back, is logged (the operator's first
// clue); the log line names the domain and the upstream.
import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startOrigin, startProxy, domain, until } from './helpers/servers.ts';

describe('upstream health changes are logged', () => {
  it('down, then up again', async () => {
    const lines: { msg: string; upstream?: string; domain?: string }[] = [];
    const sink = new Writable({ write(chunk, _e, cb) { for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
    let healthy = true;
    const origin = await startOrigin((req, res) => { res.writeHead(req.url === '/health' && !healthy ? 500 : 200); res.end('ok'); });
    const proxy = await startProxy({
      domains: [domain('hl.test', [origin.address], { healthCheck: { type: 'http', path: '/health', intervalMs: 100, timeoutMs: 200, fall: 2, rise: 2 } })],
    }, { log: pino({ level: 'info' }, sink) });
    try {
      healthy = false;
      expect(await until(() => lines.some((l) => l.msg === 'upstream down'), 3000)).toBe(true);
      expect(lines.find((l) => l.msg === 'upstream down')).toMatchObject({ domain: 'hl.test', upstream: origin.address });
      healthy = true;
      expect(await until(() => lines.some((l) => l.msg === 'upstream up'), 3000)).toBe(true);
    } finally {
      await proxy.close();
      await origin.close();
    }
  });
});
