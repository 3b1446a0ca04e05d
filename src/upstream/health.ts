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

/**
 * Where an upstream stands in the fall/rise state, as far as the next report can change it: 'ok' (healthy, no
 * failure since the last success), 'failing' (healthy, failures counting toward `fall`), 'down' (no success since),
 * 'rising' (down, successes counting toward `rise`). With worker processes the primary keeps the state and tells
 * the workers the phase; a worker passes up only the reports that can change it (worthReporting).
 */
export type HealthPhase = 'ok' | 'failing' | 'down' | 'rising';

export function healthPhase(h: Health): HealthPhase {
  return h.healthy ? (h.failures > 0 ? 'failing' : 'ok') : (h.successes > 0 ? 'rising' : 'down');
}

/** A state standing for a phase (a worker's copy of the primary's: only the phase matters to what it does). */
export function phaseHealth(p: HealthPhase): Health {
  return { healthy: p === 'ok' || p === 'failing', failures: p === 'failing' ? 1 : 0, successes: p === 'rising' ? 1 : 0 };
}

/** Whether a report can change the state in this phase: a success of an upstream that is 'ok' and a failure of
 *  one that is 'down' change nothing (nextHealth), and the bulk of a worker's requests are the first kind. Pure. */
export function worthReporting(p: HealthPhase, ok: boolean): boolean {
  return ok ? p !== 'ok' : p !== 'down';
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
    const req = mod.request({ host, port, path: hc.path, method: 'GET', agent: false, headers: { host: hostHeader, 'user-agent': 'scrubber-health' }, ...tlsOpts, servername: hostHeader });
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
