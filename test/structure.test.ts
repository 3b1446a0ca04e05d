// The shape of src/ (DESIGN.md): no import cycles, type imports included (a
// cycle of types is still two rooms that cannot be understood apart), and no
// file much over 300 lines. Nothing imports admin/ or app/ except app/ and main.ts.
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';

const SRC = path.resolve('src');
const files = (fs.readdirSync(SRC, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => path.join(SRC, f));

function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]/g)) out.push(path.resolve(path.dirname(file), m[1]));
  for (const m of text.matchAll(/import\(\s*['"](\.[^'"]+)['"]\s*\)/g)) out.push(path.resolve(path.dirname(file), m[1]));
  return out.filter((f) => f.endsWith('.ts'));
}

describe('the shape of src/', () => {
  it('has no import cycles', () => {
    const graph = new Map(files.map((f) => [f, importsOf(f)]));
    const cycles: string[] = [];
    const state = new Map<string, 1 | 2>();
    const stack: string[] = [];
    const visit = (f: string) => {
      state.set(f, 1);
      stack.push(f);
      for (const g of graph.get(f) ?? []) {
        if (state.get(g) === 1) cycles.push([...stack.slice(stack.indexOf(g)), g].map((x) => path.relative(SRC, x)).join(' → '));
        else if (!state.has(g)) visit(g);
      }
      stack.pop();
      state.set(f, 2);
    };
    for (const f of files) if (!state.has(f)) visit(f);
    expect(cycles).toEqual([]);
  });

  it('keeps every file under about 300 lines', () => {
    const long = files.map((f) => [path.relative(SRC, f), fs.readFileSync(f, 'utf8').split('\n').length] as const).filter(([, n]) => n > 320);
    expect(long).toEqual([]);
  });

  it('only app/ (and the CLI) reach into admin/ and app/', () => {
    const bad = files.filter((f) => !f.startsWith(path.join(SRC, 'app')) && !f.startsWith(path.join(SRC, 'admin')) && path.basename(f) !== 'main.ts')
      .flatMap((f) => importsOf(f).filter((g) => g.startsWith(path.join(SRC, 'admin') + path.sep) || g.startsWith(path.join(SRC, 'app') + path.sep)).map((g) => `${path.relative(SRC, f)} → ${path.relative(SRC, g)}`));
    expect(bad).toEqual([]);
  });

  // app/v8-flags.ts must run before any other module allocates (see its header): the first import of every entry.
  it('sets the V8 flags first in every process entry (the CLI and the worker process)', () => {
    for (const entry of ['main.ts', 'app/worker-entry.ts']) {
      const first = fs.readFileSync(path.join(SRC, entry), 'utf8').split('\n').find((l) => /^import\s/.test(l));
      expect(first, entry).toMatch(/^import '\.{1,2}\/(app\/)?v8-flags\.ts';$/);
    }
  });
});
