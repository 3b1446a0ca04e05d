#!/usr/bin/env node
// Thin launcher: Node 24 strips the types from src/*.ts itself, so there is no build step.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  console.error(`scrubber needs Node.js 24 (this is ${process.version}); run it through npm (npm start / npx scrubber), which uses the pinned node from node_modules.`);
  process.exit(1);
}
// SIGHUP is held from here on (Node's default for it is to exit): a reload asked while the modules load or the proxy starts.
await import('../src/sighup.ts');
await import('../src/main.ts');
