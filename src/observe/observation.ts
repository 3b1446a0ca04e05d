// What the request pipeline tells the filter and the statistics, and asks of
// the filter. The pipeline knows only these interfaces; filter/ and stats/
// implement them.
import net from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DomainConfig } from '../config/schema.ts';

export type Outcome = 'passed' | 'proxy' | 'blocked' | 'challenged';

/** One finished request, as observed by the pipeline. */
export interface Observation {
  domain: string | null;
  source: string;
  client: string;
  method: string;
  path: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  contentType: string | null;
  outcome: Outcome;
  /** The proxy's own reason when it answered (X-Scrubber). */
  proxyReason: string | null;
  upstreamError: 'connect' | 'timeout' | 'reset' | '5xx' | null;
  newConnection: boolean;
  /** Time it waited in the domain's upstream queue (the domain was at maxInflight); 0 when it did not wait. */
  queuedMs: number;
  /** Time from handing it to the upstream to the end of the answer; 0 when it never went upstream.
   *  Unlike durationMs, it leaves out the client's upload (read at the edge first) and the queue. */
  upstreamMs: number;
}

export interface RequestContext {
  source: string;
  client: string;
  domain: DomainConfig;
  newConnection: boolean;
}

export interface FilterHooks {
  /** Shared with every listener: sources on it are refused at accept. */
  readonly blockList: net.BlockList;
  /** A new client connection; false means it must be dropped. */
  onConnection(socket: net.Socket, source: string): boolean;
  /** Before forwarding. Returns false when the filter has answered (challenge) or dropped the request itself.
   *  res is null for Upgrade requests, which cannot be challenged: pass or drop. */
  admit(req: IncomingMessage, res: ServerResponse | null, ctx: RequestContext): boolean;
  /** Standing of a source when requests must wait for the upstream: 0 has a history of browsing, 1 unknown,
   *  2 suspicious. Asked only when a domain's queue is in use (off the fast path). */
  rank?(source: string): number;
  /** After every request the pipeline handled. */
  observe(o: Observation): void;
  /** A request that never became one (slow headers, parse errors, timeouts). */
  onClientError?(source: string, kind: string): void;
}

export interface StatsHooks {
  record(o: Observation): void;
}

/** Observe-nothing defaults, used until filter/ and stats/ are wired in. */
export const noFilter = (): FilterHooks => ({
  blockList: new net.BlockList(),
  onConnection: () => true,
  admit: () => true,
  observe: () => {},
});

export const noStats = (): StatsHooks => ({ record: () => {} });
