// What each endpoint of a domain answers in when the origin is not loaded,
// so that the adaptive limit judges a sample against its own endpoint and
// not against the site's fastest pages.
//
// Why: a healthy origin with one slow endpoint among fast ones (a 100 ms
// search, 2 ms pages) was read as loaded. The domain's no-load latency is
// learned from the fast answers (they come back first), and every window whose
// median is a search read as fifty times "loaded": the limit sat at its floor,
// requests timed out in the queue, and the origin was called saturated (a
// sign of attack) on a calm site.
//
// So each sample is mapped by its endpoint's baseline: a search answered in
// its usual 100 ms counts as the site's no-load latency, one answered past its
// own line of load (tolerance × its usual latency, plus the allowance for
// jitter and the proxy's own loop, in ms) as past the site's. A baseline only
// ever maps down (an endpoint faster than the site is left as it is), and an
// endpoint with no baseline is taken as it comes, as before, so a flood of new
// or random paths is judged against the site.
//
// What a baseline may learn from, since an endpoint under attack must not
// learn its loaded latency as its own:
//   - its first windows, only while the limit holds nothing back (no request
//     waits for it): the first thing known of a new endpoint;
//   - then a lower window median, always (halfway), and a higher one only
//     slowly and only in windows in which the origin was not loaded by us
//     (application limited, as the domain's no-load latency does);
//   - a probe (the limit dropped to a quarter): a lower median only. A probe
//     cannot tell an endpoint's own latency from load: near the floor (or
//     under a low maxInflight) it hardly lowers the concurrency, and with
//     several workers (or nodes, or traffic that bypasses the proxy) in front
//     of one origin it lowers only its own share of it. Letting a probe raise
//     a baseline when its latency did not fall taught flooded endpoints their
//     loaded latency, probe after probe (a reviewer's tests).
// So a proxy started under the full traffic of such a site, with requests
// waiting from the first window on, learns nothing of its slow endpoint until
// a window in which nothing waits: until then it reads the site as the old
// code did (loaded).
//
// Memory: at most MAX_ENDPOINTS per domain (least recently answered evicted:
// a flood of random paths pushes the real endpoints out, and they are
// relearned), each with a few dozen samples at most.
import { LRUCache } from 'lru-cache';

/** Endpoints remembered per domain. */
const MAX_ENDPOINTS = 256;
/** Samples an endpoint keeps per window and per probe. */
const MAX_SAMPLES = 32;
/** Samples an endpoint needs in a window (or probe) for its median to count. */
const MIN_SAMPLES = 3;
/** Longest endpoint key (method, space, path): a long first segment is cut, not stored whole. */
const MAX_KEY = 80;

interface Endpoint {
  base: number | null;
  win: number[];
  probe: number[];
}

/** The endpoint a request is judged by: its method and the first segment of its path ("GET /search"). */
export function endpointOf(method: string, url: string): string {
  const max = MAX_KEY - method.length - 1;
  let end = 1;
  while (end < url.length && end < max) { const c = url.charCodeAt(end); if (c === 47 || c === 63 || c === 35) break; end++; } // / ? #
  return `${method} ${url.slice(0, end)}`;
}

/** The [endpoint, baseline ms] entries of a list read from the state store that can be taken as such; the rest dropped. */
export function checkedEndpoints(list: unknown): [string, number][] {
  if (!Array.isArray(list)) return [];
  return list.filter((x): x is [string, number] => Array.isArray(x) && typeof x[0] === 'string' && x[0].length <= MAX_KEY &&
    typeof x[1] === 'number' && x[1] > 0 && Number.isFinite(x[1])).map(([k, b]) => [k, b]);
}

export class EndpointBaselines {
  private readonly table = new LRUCache<string, Endpoint>({ max: MAX_ENDPOINTS });
  /** Endpoints with samples in the current window or probe. */
  private readonly touched = new Set<Endpoint>();

  /** The baseline learned for an endpoint (ms), or null. */
  baseOf(key: string): number | null { return this.table.peek(key)?.base ?? null; }

  /** [endpoint, baseline ms] of every endpoint learned, least recently answered first: what a restart keeps. */
  learned(): [string, number][] {
    const out: [string, number][] = [];
    for (const [k, e] of this.table.rentries() as Generator<[string, Endpoint]>) if (e.base !== null) out.push([k, e.base]);
    return out;
  }

  /** Puts back what learned() gave (from the state store: each entry checked, the rest ignored). A proxy restarted
   *  under its site's full traffic would otherwise learn no endpoint at all: requests wait from the first window on. */
  restore(list: unknown): void {
    for (const [key, base] of checkedEndpoints(list)) this.table.set(key, { base, win: [], probe: [] });
  }

  /**
   * A sample of `key`, mapped onto the domain's no-load latency `unit` by the endpoint's baseline when that is slower
   * than the unit (else as it came). `inProbe`: dispatched during a probe, at the probe's low concurrency. `headroom`
   * (tolerance − 1) and `allowanceMs` are the limit's: latency may reach unit × (1 + headroom) + allowance before it
   * counts as load.
   */
  scale(key: string, rttMs: number, unit: number | null, inProbe: boolean, headroom: number, allowanceMs: number): number {
    let e = this.table.get(key);
    if (e === undefined) { e = { base: null, win: [], probe: [] }; this.table.set(key, e); }
    const into = inProbe ? e.probe : e.win;
    if (into.length < MAX_SAMPLES) { into.push(rttMs); this.touched.add(e); }
    const base = e.base;
    if (base === null || unit === null || base <= unit) return rttMs;
    // A straight line through (base → unit) and (the endpoint's own line of load → the site's): the allowance is in
    // milliseconds (jitter, the proxy's own loop), the same for every endpoint, and a plain ratio unit/base would shrink
    // it with the rest (a 9 ms page with 20 ms of allowed loop delay needed 150 ms of queueing to read as loaded).
    const k = (headroom * unit + allowanceMs) / (headroom * base + allowanceMs);
    return Math.max(unit + (rttMs - base) * k, rttMs * (unit / base));
  }

  /**
   * A window closed. `binding`: the limit held requests back in it (nothing of it teaches a new endpoint);
   * `appLimited`: the origin was not loaded by us in it (a baseline may rise).
   */
  closeWindow(binding: boolean, appLimited: boolean): void {
    for (const e of this.touched) {
      if (e.win.length >= MIN_SAMPLES) {
        const m = median(e.win);
        if (e.base === null) { if (!binding) e.base = m; }
        else if (m < e.base) e.base += 0.5 * (m - e.base);
        else if (appLimited) e.base += 0.05 * (m - e.base);
      }
      e.win.length = 0;
      if (e.probe.length === 0) this.touched.delete(e);
    }
  }

  /** A probe ended: a lower median is the endpoint's (a higher one is never taken from a probe: see the header). */
  endProbe(): void {
    for (const e of this.touched) {
      if (e.probe.length >= MIN_SAMPLES && e.base !== null) e.base = Math.min(e.base, median(e.probe));
      e.probe.length = 0;
      if (e.win.length === 0) this.touched.delete(e);
    }
  }
}

function median(xs: number[]): number {
  xs.sort((a, b) => a - b);
  return xs[(xs.length - 1) >> 1];
}
