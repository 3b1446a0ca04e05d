// Upstream health ("tunnels" in the seeds): a pure fall/rise state machine fed
// by active checks and by the outcome of real requests.
import net from 'node:net';
import http from 'node:http';
import https from 'node:https';
import type { HealthCheckConfig } from '../config/schema.ts';

export interface Health { healthy: boolean; failures: number; successes: number }

export const initialHealth = (): Health => ({ healthy: true, failures: 0, successes: 0 });

/** After `fall` failures in a row a healthy upstream is down; after `rise` successes in a row it is back. */
export function nextHealth(h: Health, ok: boolean, fall: number, rise: number): Health {
  if (ok) {
    const successes = h.successes + 1;
    return { healthy: h.healthy || successes >= rise, failures: 0, successes };
  }
  const failures = h.failures + 1;
  return { healthy: h.healthy && failures < fall, failures, successes: 0 };
}

/** A success while healthy with no failure counted, or a failure while down with no success counted: nothing of
 *  the state changes (nearly every request is the first kind, so nothing is done for it). Pure. */
export function changesNothing(h: Health, ok: boolean): boolean {
  return ok ? h.healthy && h.failures === 0 : !h.healthy && h.successes === 0;
}

/**
 * What one worker process's requests met at one upstream, batched for the primary, which keeps the node's state:
 * run lengths of equal outcomes, alternating, the first of kind `firstOk`. While the state is as the worker last
 * heard, an outcome that alone changes nothing (a success while healthy, a failure while down: nearly every one)
 * starts no batch; a run of them counts once before what follows (its only effect is to reset the other count,
 * nextHealth), and any run counts at most `cap` = max(fall, rise) (more changes nothing either). Applied in order,
 * a batch leaves the state as every outcome one by one would. Pure.
 */
export class OutcomeRuns {
  private runs: number[] = [];
  private firstOk = false;
  private lastOk = false;
  private quiet = false;

  /** Adds an outcome; true when it started a batch (the caller sends it later). */
  add(ok: boolean, healthy: boolean, cap: number): boolean {
    const n = this.runs.length;
    if (n === 0) {
      if (ok === healthy) { this.quiet = true; return false; }
      this.firstOk = this.quiet ? healthy : ok;
      this.runs = this.quiet ? [1, 1] : [1];
      this.lastOk = ok;
      this.quiet = false;
      return true;
    }
    if (ok === this.lastOk) { if (this.runs[n - 1] < cap) this.runs[n - 1]++; } else { this.runs.push(1); this.lastOk = ok; }
    return false;
  }

  get length(): number { return this.runs.length; }

  /** The batch, emptied (null when there is none). */
  take(): { firstOk: boolean; runs: number[] } | null {
    if (this.runs.length === 0) return null;
    const b = { firstOk: this.firstOk, runs: this.runs };
    this.runs = [];
    return b;
  }
}

/** Each outcome of a batch in order (the primary feeds them to its state machine). */
export function* outcomesOf(firstOk: boolean, runs: readonly number[]): Generator<boolean> {
  for (let i = 0; i < runs.length; i++) for (let j = 0; j < runs[i]; j++) yield i % 2 === 0 ? firstOk : !firstOk;
}

/** How HTTPS upstreams are verified: on by default, optionally against an extra CA bundle. */
export interface UpstreamTls { rejectUnauthorized: boolean; ca?: (string | Buffer)[] }

export interface ProbeResult { reachable: boolean; connectMs: number | null; status: number | null; error: string | null }

/** One check: TCP connect, or an HTTP(S) request expecting 2xx/3xx, within timeoutMs. */
export function probe(host: string, port: number, hc: Pick<HealthCheckConfig, 'type' | 'path' | 'timeoutMs'>, hostHeader: string, tlsOpts: UpstreamTls = { rejectUnauthorized: true }): Promise<ProbeResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let connectMs: number | null = null;
    let done = false;
    const finish = (r: Omit<ProbeResult, 'connectMs'>) => { if (!done) { done = true; clearTimeout(timer); resolve({ ...r, connectMs }); } };
    const timer = setTimeout(() => { finish({ reachable: connectMs !== null, status: null, error: 'timeout' }); cleanup(); }, hc.timeoutMs);
    let cleanup = () => {};
    if (hc.type === 'tcp') {
      const s = net.connect({ host, port });
      cleanup = () => s.destroy();
      s.once('connect', () => { connectMs = Math.round(performance.now() - started); finish({ reachable: true, status: null, error: null }); s.destroy(); });
      s.once('error', (e: NodeJS.ErrnoException) => finish({ reachable: false, status: null, error: e.code ?? e.message }));
      return;
    }
    const mod = hc.type === 'https' ? https : http;
    let req: http.ClientRequest;
    try {
      req = mod.request({ host, port, path: hc.path, method: 'GET', agent: false, headers: { host: hostHeader, 'user-agent': 'scrubber-health' }, ...tlsOpts, servername: hostHeader });
    } catch (e) {
      // A path Node will not send (a space, a character past Latin-1: the config check asks only for a leading /) is a
      // failed check; thrown, it rejected the probe, which nobody awaits in a handler (the checker's timer): a crash.
      finish({ reachable: false, status: null, error: (e as NodeJS.ErrnoException).code ?? String(e) });
      return;
    }
    cleanup = () => req.destroy();
    req.once('socket', (s) => s.once(hc.type === 'https' ? 'secureConnect' : 'connect', () => { connectMs = Math.round(performance.now() - started); }));
    req.once('response', (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      finish({ reachable: true, status, error: status >= 200 && status < 400 ? null : `status ${status}` });
      req.destroy();
    });
    req.once('error', (e: NodeJS.ErrnoException) => finish({ reachable: connectMs !== null, status: null, error: e.code ?? e.message }));
    req.end();
  });
}

export const probeOk = (r: ProbeResult, type: HealthCheckConfig['type']) => type === 'tcp' ? r.reachable : r.error === null;
