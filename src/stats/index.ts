// Statistics and billing (SPEC.md §7). Placeholder that counts nothing; the
// statistics issue replaces it behind the same factory.
import type { Config } from '../config/schema.ts';
import type { Db } from '../store/db.ts';
import type { Logger } from '../log.ts';
import type { AdminServer } from '../admin/server.ts';
import type { Upstreams } from '../proxy/upstreams.ts';
import type { Filter } from '../filter/index.ts';
import { noStats, type StatsHooks } from '../edge/hooks.ts';

export interface StatsDeps { db: Db; log: Logger; filter: Filter; upstreams: Upstreams; config(): Config }

export interface Stats extends StatsHooks {
  reconfigure(config: Config): void;
  registerRoutes(admin: AdminServer): void;
  close(): Promise<void>;
}

export function createStats(_config: Config, _deps: StatsDeps): Stats {
  return { ...noStats(), reconfigure() {}, registerRoutes() {}, async close() {} };
}
