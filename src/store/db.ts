// The embedded store: one SQLite file under state.dir (node:sqlite, no native
// addon). Each module owns its tables and creates them itself; this module
// only opens the file with settings that survive crashes and keep writes cheap.
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';

export type Db = DatabaseSync;

export function openStore(dir: string): Db {
  fs.mkdirSync(dir, { recursive: true });
  const db = new DatabaseSync(path.join(dir, 'scrubber.db'));
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 2000;');
  return db;
}
