// Regenerates the config key table in README.md from the schema:
//   node_modules/.bin/node scripts/readme-keys.ts
import fs from 'node:fs';
import { describeKeys } from '../src/config/load.ts';

const START = '<!-- keys:start -->';
const END = '<!-- keys:end -->';
const rows = describeKeys().map((k) => {
  const def = k.key === 'workers' ? '"number of cores"' : JSON.stringify(k.default);
  return `| \`${k.key}\` | \`${def}\` | \`${k.env}\` | ${k.doc.replaceAll('|', '\\|')} |`;
});
const table = ['| key | default | environment | meaning |', '|---|---|---|---|', ...rows].join('\n');
const readme = fs.readFileSync('README.md', 'utf8');
const a = readme.indexOf(START);
const b = readme.indexOf(END);
if (a < 0 || b < 0) throw new Error(`README.md needs ${START} and ${END}`);
fs.writeFileSync('README.md', readme.slice(0, a + START.length) + '\n' + table + '\n' + readme.slice(b));
console.log(`README.md: ${rows.length} keys`);
