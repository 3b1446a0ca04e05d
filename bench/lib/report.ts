// Small formatting helpers shared by the bench and the attack lab.
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './proc.ts';

export const RESULTS_DIR = path.join(ROOT, 'bench', 'results');

export function table(header: string[], rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => String(c)));
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...cells.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** The same table for a terminal: padded columns. */
export function textTable(header: string[], rows: (string | number)[][]): string {
  const all = [header, ...rows.map((r) => r.map(String))];
  const w = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r, j) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ') + (j === 0 ? '\n' + w.map((n) => '-'.repeat(n)).join('  ') : '')).join('\n');
}

export function writeResult(name: string, text: string): string {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, name);
  fs.writeFileSync(file, text);
  return path.relative(ROOT, file);
}

export const fmt = (n: number | null | undefined, digits = 0) => (n == null || !Number.isFinite(n) ? '–' : n.toFixed(digits));
export const pct = (n: number | null | undefined, digits = 1) => (n == null || !Number.isFinite(n) ? '–' : `${(n * 100).toFixed(digits)}%`);

export function machineLine(): string {
  const cpus = (() => { try { return fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? '?'; } catch { return '?'; } })();
  return `Node ${process.version}, ${cpus}, ${(globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? '?'} cores, ${new Date().toISOString()}`;
}
