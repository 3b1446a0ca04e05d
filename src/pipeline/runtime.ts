// The runtime: the config and the tables derived from it, immutable. A reload
// builds a new one and swaps it in one assignment; a request keeps the one it
// started with to its end.
import type { Config } from '../config/schema.ts';
import { buildRouteTable, type RouteTable } from '../route/router.ts';

export interface Runtime {
  readonly config: Config;
  readonly routes: RouteTable;
}

export function buildRuntime(config: Config): Runtime {
  // A passthrough domain is never answered over plain or terminated HTTP: its Host is unknown here (421).
  return { config, routes: buildRouteTable(config.domains.filter((d) => !d.passthrough)) };
}

/** The one place the current runtime lives; every stage reads it from here. */
export interface RuntimeRef { current: Runtime }
