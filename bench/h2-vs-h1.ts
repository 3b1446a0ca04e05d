// HTTP/2 against HTTP/1.1 through Scrubber, side by side with nginx
// terminating the same certificate, in one run: h2load (Debian
// nghttp2-client) drives all four, the upstream is HTTP/1.1 for both proxies
// (the same origin, bench/servers/fast-origin.ts), and the ratios are printed
// at the end. A third row, Node alone answering over TLS (node:http2 with
// HTTP/1.1 by ALPN, bench/servers/node-tls-hello.ts), is the floor under
// Scrubber: what Node's TLS and HTTP/2 layers cost before any proxying. The proxy under test has core 0; h2load and the origin share
// core 1 (as in bench/throughput.ts).
//
//   node bench/h2-vs-h1.ts [--quick] [--duration 8] [--clients 32] [--streams 10] [--rounds 1]
//
// --quick: 2 s runs, 1 s warm-up (the numbers are noisier; for checking the
// harness). Results: terminal and bench/results/h2-vs-h1.md.
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { parseArgs } from 'node:util';
import { start, startNode, startScrubber, stopAll, freePort, waitForPort, cpuSeconds, tools, tempDir, ROOT, type Child } from './lib/proc.ts';
import { table, textTable, writeResult, fmt, machineLine } from './lib/report.ts';
import { nginxTempPaths } from './lib/thirdparty.ts';
import { makePki } from '../test/helpers/certs.ts';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false }, duration: { type: 'string' }, clients: { type: 'string' },
    streams: { type: 'string' }, rounds: { type: 'string' },
  },
});
const QUICK = args.quick!;
const DURATION = Number(args.duration ?? (QUICK ? 2 : 8));
const WARMUP = QUICK ? 1 : 2;
const CLIENTS = Number(args.clients ?? 32);
const STREAMS = Number(args.streams ?? 10);
const ROUNDS = Number(args.rounds ?? 1);
const CPU = { server: 0, client: 1, origin: 1 };
const H2LOAD = ['/usr/bin/h2load', ...(process.env.PATH ?? '').split(':').map((d) => path.join(d, 'h2load'))].find((p) => fs.existsSync(p));

if (!H2LOAD) { console.error('h2load not found: apt-get install -y nghttp2-client'); process.exit(2); }

interface Run { rps: number; ok: number; failed: number; meanMs: number; cpuUsPerReq: number | null }

function nginxTlsConfig(dir: string, port: number, upstreamPort: number, cert: string, key: string): string {
  // nginx 1.22 (Debian 12) spells HTTP/2 on the listen line; one worker, as Scrubber is one process here.
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    ${nginxTempPaths(dir)}
    keepalive_requests 100000;
    http2_max_requests 100000;
    upstream origin { server 127.0.0.1:${upstreamPort}; keepalive 128; }
    server {
        listen 127.0.0.1:${port} ssl http2;
        ssl_certificate ${cert};
        ssl_certificate_key ${key};
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
`;
}

async function startNginxTls(upstreamPort: number, cert: string, key: string): Promise<{ child: Child; port: number } | { skipped: string }> {
  if (!tools.nginx) return { skipped: 'nginx is not installed (apt-get install -y nginx)' };
  const dir = tempDir('bench-nginx-tls-');
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxTlsConfig(dir, port, upstreamPort, cert, key));
  const child = start(tools.nginx, ['-p', dir, '-e', path.join(dir, 'early.log'), '-c', path.join(dir, 'nginx.conf')], { name: 'nginx', cpu: CPU.server, stderr: 'ignore', stopSignal: 'SIGTERM' });
  try { await waitForPort(port, child, 5000); } catch (e) {
    await child.stop();
    return { skipped: `nginx did not start: ${(e as Error).message}` };
  }
  return { child, port };
}

function h2load(port: number, h1: boolean): Promise<string> {
  // h2load pinned with the origin: the proxy's core is its own.
  const argv = ['-D', String(DURATION), '--warm-up-time', String(WARMUP), '-c', String(CLIENTS), '-t', '1', '-m', String(h1 ? 1 : STREAMS), ...(h1 ? ['--h1'] : []), `https://127.0.0.1:${port}/`];
  const [file, fileArgs] = tools.taskset ? [tools.taskset, ['-c', String(CPU.client), H2LOAD!, ...argv]] : [H2LOAD!, argv];
  return new Promise((resolve, reject) => {
    execFile(file, fileArgs, { timeout: (DURATION + WARMUP + 30) * 1000, maxBuffer: 1 << 20 }, (err, stdout) => (err && !stdout ? reject(err) : resolve(stdout)));
  });
}

async function measure(pid: number, port: number, h1: boolean): Promise<Run> {
  // CPU over the whole h2load run (warm-up included), divided by every request done (warm-up's are not in the
  // report): read as an upper bound.
  const c0 = cpuSeconds(pid);
  const out = await h2load(port, h1);
  const c1 = cpuSeconds(pid);
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
  const rps = num(/finished in [\d.]+s, ([\d.]+) req\/s/);
  const ok = num(/requests: .*?(\d+) succeeded/);
  const failed = num(/requests: .*?(\d+) failed/) + num(/requests: .*?(\d+) errored/);
  const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(out)?.[1] ?? '';
  const meanMs = mean.endsWith('us') ? parseFloat(mean) / 1000 : mean.endsWith('ms') ? parseFloat(mean) : parseFloat(mean) * 1000;
  const total = rps * (DURATION + WARMUP);
  return { rps, ok, failed, meanMs, cpuUsPerReq: c0 != null && c1 != null && total > 0 ? ((c1 - c0) * 1e6) / total : null };
}

const pki = makePki();
const leaf = pki.leaf('bench.test');
const originPort = await freePort();
const origin = startNode(path.join(ROOT, 'bench/servers/fast-origin.ts'), [String(originPort)], { name: 'origin', cpu: CPU.origin });
await waitForPort(originPort, origin);

const tlsPort = await freePort();
// Filter off: h2load comes from one address, which a filter enforcing its rules rightly bans; the per-source caps
// are raised for the same reason. What is measured is the TLS, HTTP/2 and forwarding path.
const scrubber = await startScrubber({
  upstream: `127.0.0.1:${originPort}`, domain: 'bench.test', mode: 'off', cpu: CPU.server,
  extra: {
    tls: { listen: [{ host: '127.0.0.1', port: tlsPort }], certs: [{ domains: ['bench.test'], cert: leaf.cert, key: leaf.key }] },
    limits: { maxInflightPerSource: 0, maxConnectionsPerSource: 0 },
  },
});
const nginx = await startNginxTls(originPort, leaf.cert, leaf.key);

// The floor under Scrubber: Node's own TLS and node:http2 answering by themselves (no proxying).
const basePort = await freePort();
const base = startNode(path.join(ROOT, 'bench/servers/node-tls-hello.ts'), [String(basePort), leaf.cert, leaf.key], { name: 'node-tls-hello', cpu: CPU.server });
await waitForPort(basePort, base);

const rows: { name: string; proto: string; r: Run }[] = [];
const targets: { name: string; pid: number; port: number }[] = [
  { name: 'scrubber', pid: scrubber.child.pid, port: tlsPort },
  { name: 'node alone', pid: base.pid, port: basePort },
];
if ('child' in nginx) targets.push({ name: 'nginx', pid: nginx.child.pid, port: nginx.port });
else console.log(`nginx skipped: ${nginx.skipped}`);

console.log(`h2load: ${CLIENTS} connections, ${DURATION} s (+${WARMUP} s warm-up) per run, HTTP/2 with ${STREAMS} streams per connection, HTTP/1.1 one request at a time; ${ROUNDS} round(s), median kept`);
console.log(`cores: proxy on ${CPU.server}, h2load and origin on ${CPU.client}${tools.taskset ? '' : ' (taskset missing: NOT pinned)'}; load now ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
for (const t of targets) {
  for (const proto of ['h1', 'h2'] as const) {
    const runs: Run[] = [];
    for (let i = 0; i < ROUNDS; i++) runs.push(await measure(t.pid, t.port, proto === 'h1'));
    runs.sort((a, b) => a.rps - b.rps);
    const r = runs[runs.length >> 1];
    rows.push({ name: t.name, proto: proto === 'h1' ? 'HTTP/1.1' : 'HTTP/2', r });
    console.log(`  ${t.name} ${proto}: ${fmt(r.rps)} req/s, mean ${fmt(r.meanMs, 2)} ms, ${fmt(r.cpuUsPerReq)} µs CPU/req, ${r.failed} failed`);
  }
}
await stopAll();

const get = (name: string, proto: string) => rows.find((x) => x.name === name && x.proto === proto)?.r;
const header = ['proxy', 'protocol', 'req/s', 'mean latency ms', 'CPU µs/req', 'failed'];
const body = rows.map(({ name, proto, r }) => [name, proto, fmt(r.rps), fmt(r.meanMs, 2), fmt(r.cpuUsPerReq), r.failed]);
const ratios: string[] = [];
const ratio = (a?: Run, b?: Run, f: (r: Run) => number | null = (r) => r.rps) => (a && b && f(a) && f(b) ? (f(a)! / f(b)!).toFixed(2) : '–');
ratios.push(`Scrubber HTTP/2 ÷ HTTP/1.1: ${ratio(get('scrubber', 'HTTP/2'), get('scrubber', 'HTTP/1.1'))}× req/s, ${ratio(get('scrubber', 'HTTP/2'), get('scrubber', 'HTTP/1.1'), (r) => r.cpuUsPerReq)}× CPU per request`);
ratios.push(`node:http2 alone (no proxying) HTTP/2 ÷ HTTP/1.1: ${ratio(get('node alone', 'HTTP/2'), get('node alone', 'HTTP/1.1'))}× req/s, ${ratio(get('node alone', 'HTTP/2'), get('node alone', 'HTTP/1.1'), (r) => r.cpuUsPerReq)}× CPU per request`);
if (targets.length > 1) {
  ratios.push(`nginx HTTP/2 ÷ HTTP/1.1: ${ratio(get('nginx', 'HTTP/2'), get('nginx', 'HTTP/1.1'))}× req/s, ${ratio(get('nginx', 'HTTP/2'), get('nginx', 'HTTP/1.1'), (r) => r.cpuUsPerReq)}× CPU per request`);
  for (const p of ['HTTP/1.1', 'HTTP/2']) ratios.push(`Scrubber ÷ nginx over ${p}: ${ratio(get('scrubber', p), get('nginx', p))}× req/s, ${ratio(get('scrubber', p), get('nginx', p), (r) => r.cpuUsPerReq)}× CPU per request`);
}
console.log('\n' + textTable(header, body) + '\n\n' + ratios.join('\n'));
const file = writeResult('h2-vs-h1.md', `# HTTP/2 vs HTTP/1.1 over TLS: Scrubber and nginx\n\n${machineLine()}\n\n` +
  `\`node bench/h2-vs-h1.ts${QUICK ? ' --quick' : ''} --duration ${DURATION} --clients ${CLIENTS} --streams ${STREAMS} --rounds ${ROUNDS}\`: h2load, ${CLIENTS} connections, ` +
  `HTTP/2 with ${STREAMS} concurrent streams each, HTTP/1.1 one request at a time per connection; the same certificate (RSA 2048) and origin; ` +
  `proxy on core ${CPU.server}, h2load and origin on core ${CPU.client}. Scrubber with the filter off (one source address). ` +
  `"node alone" answers by itself (no upstream): the floor under Scrubber.\n\n` +
  table(header, body) + '\n\n' + ratios.map((r) => `- ${r}`).join('\n') + '\n');
console.log(`\nwritten: ${file}`);
process.exit(0);
