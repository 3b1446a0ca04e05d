// What a request's flow needs of the pipeline it runs in: the current runtime,
// detection, the limits that span requests, the upstreams, and where its
// observation goes. The Pipeline implements it; the flow knows only this.
import type { Tunnels } from '../upstream/tunnel.ts';
import type { DomainConfig } from '../config/schema.ts';
import type { Upstreams } from '../upstream/upstreams.ts';
import type { Detector } from '../detect/detector.ts';
import type { Observation } from '../observe/observation.ts';
import type { Pages } from '../respond/pages.ts';
import type { BodyBudget } from '../limits/budget.ts';
import type { InflightCounter } from '../limits/inflight.ts';
import type { DomainOrigin, OriginGuard } from '../limits/origin-guard.ts';
import type { RuntimeRef } from './runtime.ts';

export interface FlowContext {
  readonly runtime: RuntimeRef;
  readonly upstreams: Upstreams;
  readonly detector: Detector;
  readonly pages: Pages;
  readonly budget: BodyBudget;
  readonly perSource: InflightCounter;
  readonly tunnels: Tunnels;
  inFlight: number;
  readonly origin: OriginGuard;
  originFor(domain: DomainConfig): DomainOrigin;
  observe(o: Observation): void;
}
