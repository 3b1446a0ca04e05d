// Filtering (SPEC.md §6). Placeholder that observes nothing; the filtering
// issue replaces it with the real engine behind the same factory.
import type { Config } from '../config/schema.ts';
import type { Db } from '../store/db.ts';
import type { Logger } from '../log.ts';
import type { AdminServer } from '../admin/server.ts';
import { noFilter, type FilterHooks } from '../edge/hooks.ts';

export interface FilterDeps { db: Db; log: Logger; closeSource(source: string): void }

export interface Filter extends FilterHooks {
  reconfigure(config: Config): void;
  registerRoutes(admin: AdminServer): void;
  close(): Promise<void>;
}

export function createFilter(_config: Config, _deps: FilterDeps): Filter {
  return { ...noFilter(), reconfigure() {}, registerRoutes() {}, async close() {} };
}
