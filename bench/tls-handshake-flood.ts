// The cost of TLS handshakes that never finish, side by side with finished
// ones, and whether a legitimate HTTPS request is still served quickly during
// the flood. Scrubber runs in this process (its CPU is what is measured, with
// process.cpuUsage); the flood comes from a child process, over loopback, from
// 64 source addresses (127.6.0.x).
//
//   node bench/tls-handshake-flood.ts [--quick] [--n 1000] [--concurrency 100] [--timeout 300]
//
// --quick: 300 attempts per kind (a few seconds in all). Each kind's line
// says whether every legitimate request during the flood was served under
// 1 s (the bar); the exit code is 1 when one was not. Results:
// terminal and bench/results/tls-handshake-flood.md.
//
// Kinds of attempt:
//   silent      connect, send nothing (closed at tls.handshakeTimeoutMs)
//   hello-stall send a real ClientHello, then nothing (the proxy has already
//               signed its key exchange: the expensive part of a handshake)
//   full        a complete handshake, then close (what a real visitor costs)
//   resumed     a complete handshake resuming a session ticket
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import https from 'node:https';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { loadConfigObject } from '../src/config/load.ts';
import { startApp } from '../src/app/app.ts';
import { createLogger } from '../src/log.ts';
import { makePki } from '../test/helpers/certs.ts';
import { tempDir } from '../test/helpers/servers.ts';
import { writeResult, machineLine } from './lib/report.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, n: { type: 'string' }, concurrency: { type: 'string', default: '100' }, timeout: { type: 'string', default: '300' } } });
const N = Number(values.n ?? (values.quick ? 300 : 1000));
const CONC = Number(values.concurrency);
const TIMEOUT = Number(values.timeout);

const pki = makePki();
const leaf = pki.leaf('a.test');
const raw = {
  listen: [], admin: { host: '127.0.0.1', port: 0, token: '' }, log: { level: 'silent' }, state: { dir: tempDir() },
  tls: { listen: [{ host: '127.0.0.1', port: 0 }], certs: [{ domains: ['a.test'], ...leaf }], handshakeTimeoutMs: TIMEOUT },
  filter: { mode: 'off' },
  domains: [{ name: 'a.test', upstreams: ['127.0.0.1:9'] }, { name: 'pass.test', upstreams: ['127.0.0.1:9'], passthrough: true }],
};
const r = loadConfigObject(raw, {});
if (!r.ok) throw new Error(r.problems.join('\n'));
const app = await startApp(r.config, { log: createLogger('silent') });
const port = app.listeners.addresses().find((a) => a.tls)!.port;

// The client side runs in its own process, so that its CPU is not counted here.
const CLIENT = `
const net = require('node:net'), tls = require('node:tls');
const [port, kind, n, conc, helloB64, sessB64] = process.argv.slice(1);
const hello = Buffer.from(helloB64, 'base64'); const session = sessB64 ? Buffer.from(sessB64, 'base64') : undefined;
let started = 0, done = 0, reused = 0; const t0 = Date.now();
function one() {
  if (started >= +n) return; const i = started++;
  const localAddress = '127.6.0.' + (1 + (i % 64));
  const fin = () => { done++; if (done === +n) { process.stdout.write(JSON.stringify({ ms: Date.now() - t0, reused })); process.exit(0); } one(); };
  if (kind === 'full' || kind === 'resumed') {
    const s = tls.connect({ port: +port, host: '127.0.0.1', localAddress, servername: 'a.test', rejectUnauthorized: false, session });
    s.on('secureConnect', () => { if (s.isSessionReused()) reused++; s.destroy(); });
    s.on('error', () => {}); s.on('close', fin); return;
  }
  const s = net.connect({ port: +port, host: '127.0.0.1', localAddress }, () => { if (kind === 'hello-stall') s.write(hello); });
  s.on('data', () => {}); s.on('error', () => {}); s.on('close', fin);
}
for (let i = 0; i < +conc; i++) one();
`;

async function capture(): Promise<{ hello: Buffer; session: Buffer }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const got = new Promise<Buffer>((resolve) => server.once('connection', (s) => s.once('data', (b: Buffer) => { resolve(b); s.destroy(); })));
  const c = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', servername: 'a.test', rejectUnauthorized: false });
  c.on('error', () => {});
  const hello = await got;
  c.destroy();
  server.close();
  const session = await new Promise<Buffer>((resolve) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca: fs.readFileSync(pki.ca) });
    s.once('session', (b: Buffer) => { resolve(b); s.end(); });
  });
  return { hello, session };
}

/** A legitimate HTTPS request's latency (ms), new connection each time; the proxy answers it itself (no upstream). */
function probe(): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = https.request({ host: '127.0.0.1', port, servername: 'a.test', localAddress: '127.6.1.1', path: '/', headers: { host: 'nope.test' }, ca: fs.readFileSync(pki.ca), agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(performance.now() - t0));
    });
    req.on('error', () => resolve(-1));
    req.end();
  });
}

const { hello, session } = await capture();
const lines: string[] = [];
const say = (l: string) => { console.log(l); lines.push(l); };
say(`tls.handshakeTimeoutMs ${TIMEOUT}, ${N} attempts per kind, ${CONC} at once, from 64 addresses; a passthrough domain is configured (every ClientHello is peeked)`);
say('kind        | proxy CPU per attempt | wall   | legit HTTPS request during it (new connection each, every 100 ms)');
async function flood(kind: string, withProbes: boolean): Promise<{ cpuUs: number; ms: number; reused: number; probes: number[] }> {
  const c0 = process.cpuUsage();
  const child = spawn(process.execPath, ['-e', CLIENT, String(port), kind, String(N), String(CONC), hello.toString('base64'), kind === 'resumed' ? session.toString('base64') : ''], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const probes: number[] = [];
  const probing = withProbes ? (async () => { while (child.exitCode === null) { probes.push(await probe()); await new Promise((r) => setTimeout(r, 100)); } })() : null;
  await once(child, 'exit');
  await probing;
  const c = process.cpuUsage(c0);
  const res = JSON.parse(out || '{}') as { ms?: number; reused?: number };
  return { cpuUs: c.user + c.system, ms: res.ms ?? -1, reused: res.reused ?? 0, probes };
}

// What the proxy burns doing nothing for a second (timers, the filter's tick), subtracted pro rata.
const idle0 = process.cpuUsage();
await new Promise((r) => setTimeout(r, 1000));
const idleUsPerMs = ((c) => (c.user + c.system) / 1000)(process.cpuUsage(idle0));

let slow = 0;
for (const kind of ['silent', 'hello-stall', 'full', 'resumed'] as const) {
  // CPU without probes; then the same flood again with a legitimate request every 100 ms.
  const f = await flood(kind, false);
  const p = await flood(kind, true);
  const us = Math.max(0, f.cpuUs - idleUsPerMs * f.ms) / N;
  const extra = kind === 'resumed' ? ` (${f.reused}/${N} resumed)` : '';
  const ok = p.probes.filter((x) => x >= 0);
  const max = ok.length ? Math.max(...ok) : Infinity;
  const verdict = ok.length === p.probes.length && ok.length > 0 && max < 1000 ? 'all < 1 s' : 'NOT all served < 1 s';
  if (verdict !== 'all < 1 s') slow++;
  say(`${kind.padEnd(11)} | ${us.toFixed(0).padStart(6)} µs${extra.padEnd(18)} | ${String(f.ms).padStart(5)} ms | ${verdict}: ${ok.length ? 'max ' + max.toFixed(1) + ' ms, median ' + ok.sort((x, y) => x - y)[ok.length >> 1].toFixed(1) + ' ms over ' + ok.length + ' probes' : 'no probe'}${ok.length < p.probes.length ? ', ' + (p.probes.length - ok.length) + ' FAILED' : ''}`);
}
await app.close();
const file = writeResult('tls-handshake-flood.md', `# TLS handshake flood\n\n${machineLine()}\n\n\`node bench/tls-handshake-flood.ts${values.quick ? ' --quick' : ''} --n ${N} --concurrency ${CONC} --timeout ${TIMEOUT}\`\n\n\`\`\`\n${lines.join('\n')}\n\`\`\`\n`);
console.log(`written: ${file}`);
process.exit(slow > 0 ? 1 : 0);
