// limits.postBudgetBytes with workers, black-box: a worker's share is never below one largest body (limits.maxBodyBytes), so
// one upload on an idle proxy passes with any number of workers, as in one process.
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import { perTest } from './helpers/servers.ts';

const HOST = 'budget.test';
const started = perTest();

function post(port: number, body: string, chunked: boolean): Promise<{ status: number; reason: string }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { host: HOST, 'content-type': 'text/plain' };
    if (chunked) headers['transfer-encoding'] = 'chunked'; else headers['content-length'] = String(body.length);
    const req = http.request({ host: '127.0.0.1', port, path: '/upload', method: 'POST', localAddress: '127.0.95.1', agent: false, headers }, (res) => {
      res.resume(); res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: String(res.headers['x-scrubber'] ?? '') }));
    });
    req.setTimeout(5000, () => req.destroy());
    req.on('error', () => resolve({ status: 0, reason: 'error' }));
    req.end(body);
  });
}

describe('limits.postBudgetBytes with workers: one upload on an idle proxy', () => {
  for (const workers of [1, 2]) {
    it(`workers ${workers}: an 800-byte upload and a small chunked one pass (budget 1500, maxBodyBytes 1000)`, async () => {
      const origin = await started.origin();
      const cli = await started.cli(HOST, origin.address, { workers, limits: { maxBodyBytes: 1000, postBudgetBytes: 1500 } });
      const a = await post(cli.port, 'x'.repeat(800), false);
      const b = await post(cli.port, 'hello', true);
      expect({ workers, fixed: `${a.status} ${a.reason}`, chunked: `${b.status} ${b.reason}` }).toEqual({ workers, fixed: '200 ', chunked: '200 ' });
    }, 30_000);
  }
});
