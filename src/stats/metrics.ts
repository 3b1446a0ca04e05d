// Prometheus exposition (prom-client). Values are read from the recorder's
// totals when scraped, so the request path never touches prom-client (its
// label hashing allocates). Labels: domain and status class only, never a
// client address or URL, so the series count is bounded by the config.
import { Registry, Counter, Gauge } from 'prom-client';
import type { FilterView, Recorder } from './recorder.ts';
import type { Upstreams } from '../upstream/upstreams.ts';
import { F, G, type Field } from './buckets.ts';
import { FIELDS } from './buckets.ts';

const idx = (f: Field) => FIELDS.indexOf(f);

/** Per-domain counters: metric name → counter field. */
const DOMAIN_COUNTERS: [string, string, number][] = [
  ['scrubber_requests_passed_total', 'Requests forwarded to an upstream and relayed.', idx('req_passed')],
  ['scrubber_requests_dropped_total', 'Requests dropped by the filter.', idx('req_dropped')],
  ['scrubber_requests_challenged_total', 'Requests answered with a challenge by the filter.', idx('req_challenged')],
  ['scrubber_requests_proxy_answered_total', 'Requests answered by the proxy itself (error pages, limits, maintenance).', idx('req_proxy')],
  ['scrubber_received_bytes_total', 'Request bytes received, all requests.', idx('in_bytes_in')],
  ['scrubber_sent_bytes_total', 'Response bytes sent, all requests.', idx('in_bytes_out')],
  ['scrubber_passed_received_bytes_total', 'Request bytes of passed requests.', idx('passed_bytes_in')],
  ['scrubber_passed_sent_bytes_total', 'Response bytes of passed requests.', idx('passed_bytes_out')],
  ['scrubber_upstream_connect_errors_total', 'Requests whose upstream could not be connected to.', F.errConnect],
  ['scrubber_upstream_timeouts_total', 'Requests whose upstream sent no response in time.', F.errTimeout],
  ['scrubber_upstream_resets_total', 'Requests whose upstream connection was reset.', F.errReset],
  ['scrubber_upstream_5xx_total', 'Upstream responses with a 5xx status.', F.err5xx],
];

/** What is read of a domain's upstream queue (one process's queue, or the sum over the workers). */
/** limit: what the queue holds its domain to now (learned, or maxInflight; 0 = none). */
export interface QueueView { readonly active: number; readonly queued: number; readonly limit?: number }

export interface MetricsDeps { recorder: Recorder; filter: FilterView; upstreams: Upstreams; queues: ReadonlyMap<string, QueueView>; clock?: { readonly offsetMs: number | null } }

export function createMetrics(deps: MetricsDeps): Registry {
  const registry = new Registry();
  const { recorder } = deps;
  new Counter({
    name: 'scrubber_requests_total', help: 'Requests per domain and response status class.', labelNames: ['domain', 'status_class'], registers: [registry],
    collect() {
      this.reset();
      for (const [domain, a] of recorder.totals()) {
        for (let k = 1; k <= 5; k++) this.inc({ domain, status_class: `${k}xx` }, a.total[F.status1xx + k - 1]);
      }
    },
  });
  for (const [name, help, field] of DOMAIN_COUNTERS) {
    new Counter({
      name, help, labelNames: ['domain'], registers: [registry],
      collect() { this.reset(); for (const [domain, a] of recorder.totals()) this.inc({ domain }, a.total[field]); },
    });
  }
  const globalCounter = (name: string, help: string, field: number) => new Counter({
    name, help, registers: [registry], collect() { this.reset(); this.inc(recorder.globalTotal[field]); },
  });
  globalCounter('scrubber_connections_dropped_at_accept_total', 'Connections from blacklisted sources refused at accept.', G.acceptDropped);
  globalCounter('scrubber_unrouted_requests_total', 'Requests with a missing, malformed or unknown Host.', G.unroutedRequests);
  new Gauge({
    name: 'scrubber_upstream_inflight', help: 'Requests in flight to the domain\'s upstreams (counted when domains[].maxInflight or the queue is in use).', labelNames: ['domain'], registers: [registry],
    collect() { this.reset(); for (const [domain, q] of deps.queues) this.set({ domain }, q.active); },
  });
  new Gauge({
    name: 'scrubber_upstream_queue_waiting', help: 'Requests waiting in the domain\'s upstream queue (domains[].maxInflight).', labelNames: ['domain'], registers: [registry],
    collect() { this.reset(); for (const [domain, q] of deps.queues) this.set({ domain }, q.queued); },
  });
  new Gauge({
    name: 'scrubber_blacklist_size', help: 'Sources on the blacklist now.', registers: [registry],
    collect() { this.set(deps.filter.snapshot().blacklistSize); },
  });
  new Counter({
    name: 'scrubber_bans_evicted_total', help: 'Bans lifted before their time because the blacklist was full (filter.maxBans).', registers: [registry],
    collect() { this.reset(); this.inc(deps.filter.snapshot().counters.bansEvicted ?? 0); },
  });
  new Gauge({
    name: 'scrubber_under_attack', help: '1 while the domain is in attack mode.', labelNames: ['domain'], registers: [registry],
    collect() {
      this.reset();
      const attacked = new Set(deps.filter.snapshot().underAttack);
      for (const domain of deps.upstreams.groups.keys()) this.set({ domain }, attacked.has(domain) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'scrubber_upstreams_healthy', help: 'Upstream servers of the domain now considered healthy.', labelNames: ['domain'], registers: [registry],
    collect() {
      this.reset();
      for (const [domain, g] of deps.upstreams.groups) this.set({ domain }, g.all().filter((u) => u.healthy).length);
    },
  });
  new Gauge({
    name: 'scrubber_upstreams', help: 'Upstream servers configured for the domain (main and backup).', labelNames: ['domain'], registers: [registry],
    collect() { this.reset(); for (const [domain, g] of deps.upstreams.groups) this.set({ domain }, g.all().length); },
  });
  // With Redis only: decisions across nodes are ordered by the deciding node's clock.
  const clock = deps.clock;
  if (clock) {
    new Gauge({
      name: 'scrubber_redis_clock_offset_ms', help: 'This node\'s clock minus Redis\'s, ms, as last measured (none until measured).', registers: [registry],
      collect() { this.reset(); if (clock.offsetMs !== null) this.set(clock.offsetMs); },
    });
  }
  return registry;
}
