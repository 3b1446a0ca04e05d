// Filtering (SPEC.md §6). Placeholder that observes nothing; the filtering
// issue replaces it with the real engine behind the same factory.
import type { Config } from '../config/schema.ts';
import type { Db } from '../store/db.ts';
import type { Logger } from '../log.ts';
import type { AdminServer } from '../admin/server.ts';
import { noFilter, type FilterHooks } from '../edge/hooks.ts';

export interface FilterDeps {
  db: Db;
  log: Logger;
  /** Destroys every open client connection of a source (a new ban takes effect at once). */
  closeSource(source: string): void;
  /** Installs a new BlockList on every listener (net.BlockList cannot remove entries, so unbans swap the list). */
  setBlockList(list: import('node:net').BlockList): void;
}

/** What statistics and the dashboard read from the filter. */
export interface FilterSnapshot {
  blacklistSize: number;
  /** Domains currently in attack mode. */
  underAttack: string[];
  /** Monotonic counters (connections dropped at accept, challenges sent, bans by rule, ...). */
  counters: Record<string, number>;
}

export interface Filter extends FilterHooks {
  reconfigure(config: Config): void;
  registerRoutes(admin: AdminServer): void;
  snapshot(): FilterSnapshot;
  close(): Promise<void>;
}

export function createFilter(_config: Config, _deps: FilterDeps): Filter {
  return { ...noFilter(), reconfigure() {}, registerRoutes() {}, snapshot: () => ({ blacklistSize: 0, underAttack: [], counters: {} }), async close() {} };
}
