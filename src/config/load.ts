// Loading: file → convict (types, defaults, SCRUBBER_* env) → structural checks.
// Returns either a complete Config or the list of problems, never half of one.
import fs from 'node:fs';
import convict from 'convict';
import { schema, type Config } from './schema.ts';
import { validateStructure } from './validate.ts';
import { numericKind, parseCount, parseDecimal, parseDuration, parseSize, type Parsed } from './units.ts';

convict.addFormat({
  name: 'json-array',
  validate(v: unknown) { if (!Array.isArray(v)) throw new Error('must be an array'); },
  // From the environment an array arrives as JSON text. Only an array is taken: convict merges an object given for
  // a key into the key's default (see withoutBadShapes), so JSON of an object is kept as text and refused.
  coerce(v: unknown) {
    if (typeof v !== 'string') return v;
    try { const a: unknown = JSON.parse(v); return Array.isArray(a) ? a : v; } catch { return v; }
  },
});

// Strict numeric formats replace convict's nat/port/Number, whose coercion is
// parseInt/parseFloat ("10MB" → 10). A string that does not parse is kept as
// it is, so that validation reports it with the key and the reason.
function strictFormat(name: string, parse: (v: unknown) => Parsed, extra?: (n: number) => string | null): void {
  convict.addFormat({
    name,
    validate(v: unknown) {
      const r = parse(v);
      if (!r.ok) throw new Error(r.why);
      const why = extra?.(r.value);
      if (why) throw new Error(why);
    },
    coerce(v: unknown) { const r = parse(v); return r.ok ? r.value : v; },
  });
}
strictFormat('size', parseSize);
strictFormat('duration-ms', (v) => parseDuration(v, 'ms'));
strictFormat('duration-s', (v) => parseDuration(v, 's'));
strictFormat('count', parseCount);
strictFormat('decimal', parseDecimal);
strictFormat('strict-int', (v) => parseDecimal(v), (n) => (Number.isSafeInteger(n) ? null : 'must be a whole number'));
strictFormat('strict-port', parseCount, (n) => (n > 65535 ? 'ports must be within range 0 - 65535' : null));

// convict's Boolean reads every text but "false" as true (SCRUBBER_DEMO_ENABLED=0, no, off, "" loaded as true):
// only true and false, as JSON or as text, are taken; anything else is kept as it is and refused by validate.
convict.addFormat({
  name: 'strict-boolean',
  validate(v: unknown) { if (typeof v !== 'boolean') throw new Error('must be true or false'); },
  coerce(v: unknown) { return v === 'true' ? true : v === 'false' ? false : v; },
});

const STRICT: Record<string, string> = { size: 'size', ms: 'duration-ms', s: 'duration-s', count: 'count' };

/** The strict format for a schema leaf: by the key's name for whole numbers (see numericKind), else as declared. */
function strictFormatOf(format: unknown, key: string): unknown {
  if (format === 'nat') return STRICT[numericKind(key)];
  if (format === 'port') return 'strict-port';
  if (format === 'int') return 'strict-int';
  if (format === Number) return 'decimal';
  if (format === Boolean) return 'strict-boolean';
  return format;
}

type SchemaNode = Record<string, unknown>;
const isLeaf = (n: SchemaNode) => 'default' in n && 'doc' in n;

/** SCRUBBER_ + the key path in upper snake case: upstream.connectTimeoutMs → SCRUBBER_UPSTREAM_CONNECT_TIMEOUT_MS. */
export function envName(path: string[]): string {
  return 'SCRUBBER_' + path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

function withEnv(node: SchemaNode, path: string[] = []): SchemaNode {
  if (isLeaf(node)) return { ...node, format: strictFormatOf(node.format, path[path.length - 1]), env: envName(path) };
  const out: SchemaNode = {};
  for (const [k, v] of Object.entries(node)) out[k] = withEnv(v as SchemaNode, [...path, k]);
  return out;
}

/** Every leaf key with its doc, default and env name (for `scrubber keys` and the README). */
export function describeKeys(node: SchemaNode = schema as unknown as SchemaNode, path: string[] = []): { key: string; doc: string; default: unknown; env: string }[] {
  if (isLeaf(node)) return [{ key: path.join('.'), doc: String(node.doc), default: node.default, env: envName(path) }];
  return Object.entries(node).flatMap(([k, v]) => describeKeys(v as SchemaNode, [...path, k]));
}

function convictProblems(message: string): string[] {
  return message.split('\n').filter(Boolean).map((line) => {
    const m = /configuration param '([^']+)' not declared in the schema/.exec(line);
    return m ? `${m[1]}: unknown key` : line.trim();
  });
}

/** A problem of a key the environment set names the variable and what it held (the file may not have the key at all). Pure. */
export function withEnvSource(problem: string, env: NodeJS.ProcessEnv): string {
  const m = /^([A-Za-z0-9.]+): (.*?)(?:: value was .*)?$/s.exec(problem);
  if (!m) return problem;
  const name = envName(m[1].split('.'));
  const v = env[name];
  return v === undefined ? problem : `${m[1]}: ${m[2]} (${name}=${JSON.stringify(v)})`;
}

const kindOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`);
const isPlain = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A section (limits, tls, filter.attack …) given as something else than an object came out of convict as one
 *  "missing from config, did you override its parent?" per key, a wrong "unknown key" and a TypeError; and an object
 *  given for a key (`"listen": {"host": …, "port": …}`, `"domains": {…}`) convict merges into the key's default, so
 *  it was taken silently as the default (the proxy on 127.0.0.1:8080 with no domains). Each is named once here and
 *  left out (its keys keep their defaults), so the rest of the config is still checked. */
function withoutBadShapes(node: SchemaNode, raw: Record<string, unknown>, at: string[], problems: string[]): Record<string, unknown> {
  const out = { ...raw };
  for (const [k, v] of Object.entries(raw)) {
    const sub = Object.hasOwn(node, k) ? node[k] as SchemaNode : undefined;
    if (!sub) continue;
    const key = [...at, k].join('.');
    if (isLeaf(sub)) {
      if (!isPlain(v)) continue;
      problems.push(`${key}: must be ${sub.format === 'json-array' ? 'an array' : 'a single value (text, a number or true/false)'}, not an object`);
      delete out[k];
    } else if (isPlain(v)) out[k] = withoutBadShapes(sub, v, [...at, k], problems);
    else { problems.push(`${key}: must be an object (a section of keys), not ${kindOf(v)}`); delete out[k]; }
  }
  return out;
}

export type LoadResult = { ok: true; config: Config } | { ok: false; problems: string[] };

/** Loads from a parsed object (env still applies). */
export function loadConfigObject(raw: unknown, env: NodeJS.ProcessEnv = process.env): LoadResult {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, problems: ['(root): the config must be a JSON object'] };
  const problems: string[] = [];
  const sections = withoutBadShapes(schema as unknown as SchemaNode, raw as Record<string, unknown>, [], problems);
  let c;
  try {
    c = convict(withEnv(schema as unknown as SchemaNode) as never, { env, args: [] });
    c.load(sections);
  } catch (e) {
    return { ok: false, problems: [...problems, ...convictProblems((e as Error).message).map((p) => withEnvSource(p, env))] };
  }
  try { c.validate({ allowed: 'strict' }); } catch (e) { problems.push(...convictProblems((e as Error).message).map((p) => withEnvSource(p, env))); }
  const config = c.getProperties() as unknown as Config;
  // Structural checks still run, so one `scrubber check` lists every problem; a key already refused above (its type)
  // is not reported again by them (one line per problem: "domains: must be an array" came twice).
  const refused = new Set(problems.map((p) => p.slice(0, p.indexOf(':'))));
  // Named with the variable it came from when the environment set the key, as a type problem is.
  try { for (const p of validateStructure(config)) if (!refused.has(p.slice(0, p.indexOf(':')))) problems.push(withEnvSource(p, env)); } catch (e) { problems.push(`(root): ${(e as Error).message}`); }
  return problems.length ? { ok: false, problems } : { ok: true, config };
}

/** V8's JSON message on one line (it quotes the file around the fault, line breaks and all), with the line and column
 *  when it gives the position (one line per problem: SPEC §1). */
export function jsonError(text: string, message: string): string {
  const at = /at position (\d+)/.exec(message);
  const flat = message.replace(/\s*\n\s*/g, ' ');
  if (!at || /\(line \d+ column \d+\)/.test(message)) return flat;
  const before = text.slice(0, Number(at[1])).split('\n');
  return `${flat} (line ${before.length} column ${before[before.length - 1].length + 1})`;
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadResult {
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) {
    return { ok: false, problems: [`(file): cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`] };
  }
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (e) {
    return { ok: false, problems: [`(file): ${file} is not valid JSON: ${jsonError(text, (e as Error).message)}`] };
  }
  return loadConfigObject(raw, env);
}
