// Attack mode on a node of several workers is judged once, by the primary, on
// the sum of every worker's seconds of a domain (cluster/node-attacks.ts): the
// same total traffic gives the same decision as one process, however it is
// split. Judged in each worker on its share (as before), fixed counts (5
// requests, 3 failures a second) took N times the traffic to show, and a rise
// from the few sources of one worker was measured against a 1/N baseline.
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import { perTest, request, sleep, browserPage } from './helpers/servers.ts';
import { loadConfigObject } from '../src/config/load.ts';
import { shardOf } from '../src/cluster/protocol.ts';
import { AttackRounds, ROUND_WAIT_MS } from '../src/cluster/attack-rounds.ts';
import { combineSamples, newAttackState, stepAttack, type AttackParams, type Sample } from '../src/detect/attack-mode.ts';

const r = loadConfigObject({ domains: [{ name: 'a.test', upstreams: ['127.0.0.1:1'] }] }, {});
if (!r.ok) throw new Error(r.problems.join('\n'));
const P: AttackParams = r.config.filter.attack;

const sample = (requests: number, o: Partial<Sample> = {}): Sample => ({ requests, answered: requests, latencySumMs: requests * 20, upstreamErrors: 0, queued: 0, seconds: 1, saturated: null, ...o });

/** The node's judgement: `secs` seconds, each worker's second from `split(i)` (one per worker), through the rounds. */
function node(split: (w: number) => Sample, workers: number, learnRps: number, secs: number): boolean {
  const st = newAttackState(), rounds = new AttackRounds();
  let t = 0;
  const second = (f: (w: number) => Sample) => {
    t += 1000;
    for (let w = 0; w < workers; w++) { const c = rounds.add(w, 'a.test', f(w), t); if (c) stepAttack(st, c, P, t); }
  };
  for (let i = 0; i < 60; i++) second((w) => sample(learnRps / workers));
  expect(st.under).toBe(false);
  for (let i = 0; i < secs; i++) second(split);
  return st.under;
}

describe('the node judges attack mode on the sum of its workers\' seconds (pure)', () => {
  it('adds up counts and rates; the origin is saturated when half of the workers that judge it say so', () => {
    const c = combineSamples([sample(10, { seconds: 1, saturated: true, queued: 2 }), sample(30, { seconds: 1.5, saturated: false, upstreamErrors: 3 }), sample(0, { saturated: null })]);
    expect([c.requests, c.upstreamErrors, c.queued, c.saturated]).toEqual([40, 3, 2, true]);
    expect(c.requests / c.seconds).toBeCloseTo(10 + 20, 6); // 10/s and 30 in 1.5 s
    expect(combineSamples([sample(1, { saturated: true }), sample(1, { saturated: false }), sample(1, { saturated: false })]).saturated).toBe(false);
    expect(combineSamples([sample(1), sample(1)]).saturated).toBe(null);
  });

  it('a round closes when every live worker sent its second, or after ROUND_WAIT_MS with what came', () => {
    const rounds = new AttackRounds();
    expect(rounds.add(0, 'a', sample(5), 0)).not.toBe(null); // alone: its own round
    expect(rounds.add(1, 'a', sample(5), 100)).toBe(null); // worker 1 is live now: worker 0's second is awaited
    expect(rounds.add(0, 'a', sample(5), 1000)!.requests).toBe(10);
    expect(rounds.add(0, 'a', sample(5), 2000)).toBe(null);
    expect(rounds.add(0, 'a', sample(5), 2900)).toBe(null); // its second second before worker 1's: both its share
    const c = rounds.add(1, 'a', sample(4), 3000)!;
    expect([c.requests, Math.round((c.requests / c.seconds) * 10) / 10]).toEqual([14, 9]); // 5/s over 2 s, and 4/s
    // Worker 1 goes quiet: the round is judged on worker 0's second once it waited long enough.
    expect(rounds.add(0, 'a', sample(7), 4000)).toBe(null);
    expect(rounds.due(4000 + ROUND_WAIT_MS - 1)).toEqual([]);
    expect(rounds.due(4000 + ROUND_WAIT_MS).map(([d, s]) => [d, s.requests])).toEqual([['a', 7]]);
    // Heard from no more: not waited for.
    expect(rounds.add(0, 'a', sample(7), 9000)).not.toBe(null);
    // A worker none of whose sources came for a domain sends none of it: the domain's rounds do not wait for it.
    for (let t = 10_000; t < 14_000; t += 1000) {
      expect(rounds.add(1, 'b', sample(3), t)).not.toBe(null);
      expect(rounds.add(0, 'a', sample(3), t + 10)).not.toBe(null);
    }
  });

  it('an origin failing every request at 8 req/s puts the domain under attack with 2 workers, as in one process', () => {
    const failing = (n: number) => sample(n, { answered: 0, latencySumMs: 0, upstreamErrors: n });
    expect(node(() => failing(8), 1, 8, 10)).toBe(true);
    expect(node(() => failing(4), 2, 8, 10)).toBe(true);
    // 16 workers, 40 failing requests a second in all (2 or 3 each).
    expect(node((w) => failing(w % 2 ? 3 : 2), 16, 40, 10)).toBe(true);
  });

  it('an origin answering in 3 s at 8 req/s puts it under attack with 2 workers, as in one process', () => {
    expect(node(() => sample(4, { latencySumMs: 4 * 3000 }), 2, 8, 10)).toBe(true);
  });

  it('one busy source in one worker is measured against the node\'s baseline, not its worker\'s share of it', () => {
    // A domain of 40 req/s: one process stays calm at 140 (the line is 4 × 40); so must two workers with the extra
    // 100 req/s all in one of them, and sixteen with one API client at 10 req/s.
    expect(node((w) => sample(w === 0 ? 120 : 20), 2, 40, 10)).toBe(false);
    expect(node((w) => sample(w === 0 ? 12.5 : 2.5), 16, 40, 10)).toBe(false);
    // A flood of the same size spread over both is an attack either way.
    expect(node(() => sample(100), 2, 40, 10)).toBe(true);
  });
});

const HOST = 'split.test';
const started = perTest();

function get(port: number, local: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', localAddress: local, agent: false, headers: { host: HOST, accept: 'application/json' } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
    req.setTimeout(8000, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}
/** `count` addresses of 127.0.71.0/24 that the primary hands to worker `w` of `n`. */
function addressesOf(w: number, n: number, count: number): string[] {
  const out: string[] = [];
  for (let i = 1; i < 255 && out.length < count; i++) { const a = `127.0.71.${i}`; if (shardOf(a, n) === w) out.push(a); }
  return out;
}

describe('attack mode of a node of two workers, on real sockets', () => {
  it('an origin that answers 503 to all of 6 req/s, spread over both workers, puts the domain under attack in both', async () => {
    const origin = await started.origin((_q, res) => { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('busy'); });
    const cli = await started.cli(HOST, origin.address, { workers: 2, filter: { mode: 'auto' } });
    // 3 failures a second in each worker: below a worker's own line (3 of at least 5 requests), over the node's.
    const srcs = [...addressesOf(0, 2, 6), ...addressesOf(1, 2, 6)];
    const t0 = Date.now();
    const pending: Promise<number>[] = [];
    for (let n = 0; n < 48; n++) {
      pending.push(get(cli.port, srcs[n % 2 ? 6 + (n % 6) : n % 6]));
      await sleep(Math.max(0, t0 + ((n + 1) * 1000) / 6 - Date.now()));
    }
    await Promise.all(pending);
    await sleep(1200);
    const d = JSON.parse((await request(`http://127.0.0.1:${cli.admin}/api/domains`)).body).domains.find((x: { name: string }) => x.name === HOST);
    expect(d.underAttack).toBe(true);
    const w = JSON.parse((await request(`http://127.0.0.1:${cli.admin}/api/workers`)).body).workers as { underAttack: string[] }[];
    expect(w.map((x) => x.underAttack)).toEqual([[HOST], [HOST]]);
  }, 30_000);
});

describe('a copied challenge cookie on a node of two workers', () => {
  const page = (port: number, local: string, cookie?: string) => browserPage(port, local, HOST, cookie);

  // A source belongs to one worker: counted per worker, a token used from 8 networks spread over two was honoured 8
  // times, not 4 (filter.challenge.maxNetworksPerToken); the node counts them now.
  it('is honoured from maxNetworksPerToken networks in all, however they are spread over the workers', async () => {
    const origin = await started.origin();
    const cli = await started.cli(HOST, origin.address, { workers: 2, filter: { mode: 'always' } });
    const first = await page(cli.port, '127.0.81.9');
    expect(first.status).toBe(302);
    const statuses: number[] = [];
    for (let n = 1; n <= 8; n++) {
      statuses.push((await page(cli.port, `127.0.${80 + n}.9`, first.cookie)).status);
      await sleep(100); // the node's count comes back to the workers over IPC
    }
    expect(new Set([1, 2, 3, 4, 5, 6, 7, 8].map((n) => shardOf(`127.0.${80 + n}.9`, 2))).size).toBe(2);
    // The request that crosses the line passes in its worker (the node's count answers over IPC); none after it.
    expect(statuses.slice(0, 4)).toEqual([200, 200, 200, 200]);
    expect(statuses.slice(5)).toEqual([302, 302, 302]);
  }, 30_000);
});
