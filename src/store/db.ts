// The embedded store: one SQLite file under state.dir (node:sqlite, no native
// addon). Each module owns its tables and creates them itself; this module
// only opens the file with settings that survive crashes and keep writes cheap.
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';

export type Db = DatabaseSync;

export const storeFile = (dir: string) => path.join(dir, 'scrubber.db');
/** How long one write waits for a lock held elsewhere before it fails (and is retried by the next save). */
export const BUSY_TIMEOUT_MS = 50;

/** A failure of the store, its message naming state.dir and the folder or file (for the operator, not a stack). */
export class StoreError extends Error {}

const reason = (e: unknown) => (e as NodeJS.ErrnoException).code && !(e as Error).message.includes((e as NodeJS.ErrnoException).code!)
  ? `${(e as NodeJS.ErrnoException).code}: ${(e as Error).message}` : (e as Error).message;

/** Wraps an error met while using the store so that it names the file (errors already wrapped pass through). */
export function storeError(dir: string, e: unknown): StoreError {
  return e instanceof StoreError ? e : new StoreError(`state.dir: the store ${storeFile(dir)} failed: ${reason(e)}`);
}

export function openStore(dir: string): Db {
  const file = storeFile(dir);
  try { fs.mkdirSync(dir, { recursive: true }); } catch (e) {
    throw new StoreError(`state.dir: cannot create the folder ${dir}: ${reason(e)}`);
  }
  if (!fs.statSync(dir).isDirectory()) throw new StoreError(`state.dir: ${dir} is not a folder`);
  // WAL keeps two files beside the database, so a folder the store cannot write to fails later, on the first save.
  try { fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK); } catch (e) {
    throw new StoreError(`state.dir: the folder ${dir} is not writable (${(e as NodeJS.ErrnoException).code}); the store keeps ${path.basename(file)} and its journal there`);
  }
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(file);
    // The store is synchronous, on the thread that serves: a lock held elsewhere (a backup, a second process) must cost
    // a save a moment, not the proxy seconds (at 2000 ms each try held every request behind it: a GET took 16 s). A
    // save that fails keeps what it had queued for the next one.
    db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS};`);
    // SQLite opens a read-only or damaged file without complaint and fails on
    // the first read of the schema or the first write: both are tried here
    // (and rolled back), so that the start fails rather than the first save.
    db.prepare('SELECT count(*) FROM sqlite_schema').get();
    db.exec('BEGIN IMMEDIATE; CREATE TABLE store_write_probe (x); ROLLBACK;');
    return db;
  } catch (e) {
    try { db?.close(); } catch { /* already unusable */ }
    throw new StoreError(`state.dir: cannot use the store ${file}: ${reason(e)}`);
  }
}
