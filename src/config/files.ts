// The files a config names (TLS certificates and keys, the upstream CA bundle),
// as the process that put the config in force read them. With workers, the
// primary reads them when it starts and at each reload, and every worker builds
// its TLS contexts from those bytes, not from the disk: a file moved, deleted or
// half rewritten since (a certificate rotation) kept a replaced worker from ever
// starting (it was restarted for good, its sources spread over the others), and
// could leave the processes of one node on different certificates.
import fs from 'node:fs';
import type { Config } from './schema.ts';

const held = new Map<string, Buffer>();

function paths(config: Config): string[] {
  const out = config.tls.certs.flatMap((c) => [c.cert, c.key]);
  if (config.upstream.caFile) out.push(config.upstream.caFile);
  return [...new Set(out)];
}

/** Every file the config names, read now, as [path, base64] (throws as readFileSync does, naming the file). */
export function readConfigFiles(config: Config): [string, string][] {
  return paths(config).map((p) => [p, fs.readFileSync(p).toString('base64')]);
}

/** From now on these contents stand for their paths in this process (a worker: at its start and at each reload). */
export function holdConfigFiles(files: [string, string][]): void {
  held.clear();
  for (const [p, b64] of files) held.set(p, Buffer.from(b64, 'base64'));
}

/** A file the config names: as held, else read from the disk (a process alone, the primary). */
export function configFile(path: string): Buffer {
  return held.get(path) ?? fs.readFileSync(path);
}
