// nginx and HAProxy as our own child processes on loopback, on generated
// configs in a temp dir: one process, one worker/thread, no daemon, no system
// files touched. "plain" is a bare reverse proxy; "ddos" is what their own
// documentation recommends against layer-7 floods:
// - nginx: "Mitigating DDoS Attacks with NGINX and NGINX Plus" (nginx.com
//   blog): limit_req per $binary_remote_addr, limit_conn per address,
//   client_body_timeout / client_header_timeout 5s, a tighter limit on login.
// - HAProxy: "Application-Layer DDoS Attack Protection with HAProxy"
//   (haproxy.com blog): a stick table tracking each source's http_req_rate,
//   http_err_rate and conn_cur, deny 429 past the rate, reject past the
//   connection count, `timeout http-request` against slowloris and
//   `option http-buffer-request` against slow POST.
import fs from 'node:fs';
import path from 'node:path';
import { start, tools, freePort, waitForPort, tempDir, type Child } from './proc.ts';

/** nginx writes temporary files beside its config, never in the system's folders (it runs unprivileged here). */
export const nginxTempPaths = (dir: string): string => ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
  .map((k) => `${k === 'body' ? 'client_body' : k}_temp_path ${dir}/${k};`).join('\n    ');

export type Flavour = 'plain' | 'ddos';

/** Per-source limits shared by both, so nginx and HAProxy get the same thresholds. */
export const DDOS_LIMITS = { reqPerSec: 10, burst: 20, connPerSource: 10, headerTimeoutS: 5, bodyTimeoutS: 5 };

export interface ThirdParty { child: Child; port: number; dir: string; name: string }

/** `workers` > 1: a master and that many worker processes (as nginx runs in production); 1: one process, no master. */
export function nginxConfig(dir: string, port: number, upstreamPort: number, flavour: Flavour, workers = 1): string {
  const L = DDOS_LIMITS;
  const ddosHttp = flavour === 'ddos' ? `
    limit_req_zone $binary_remote_addr zone=perip:10m rate=${L.reqPerSec}r/s;
    limit_req_zone $binary_remote_addr zone=login:10m rate=30r/m;
    limit_conn_zone $binary_remote_addr zone=addr:10m;
    limit_req_status 429;
    limit_conn_status 429;
    client_body_timeout ${L.bodyTimeoutS}s;
    client_header_timeout ${L.headerTimeoutS}s;` : '';
  const ddosServer = flavour === 'ddos' ? `limit_conn addr ${L.connPerSource};` : '';
  const ddosLoc = flavour === 'ddos' ? `limit_req zone=perip burst=${L.burst} nodelay;` : '';
  const proxy = `proxy_pass http://origin;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`;
  return `daemon off;
master_process ${workers > 1 ? 'on' : 'off'};
worker_processes ${workers};
worker_rlimit_nofile 20000;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log error;
events { worker_connections 16000; multi_accept on; }
http {
    access_log off;
    ${nginxTempPaths(dir)}
    keepalive_requests 100000;
    ${ddosHttp}
    upstream origin { server 127.0.0.1:${upstreamPort}; keepalive 128; }
    server {
        listen 127.0.0.1:${port} backlog=4096;
        ${ddosServer}
        location / {
            ${ddosLoc}
            ${proxy}
        }
        ${flavour === 'ddos' ? `location = /login {
            limit_req zone=login burst=5 nodelay;
            ${proxy}
        }` : ''}
    }
}
`;
}

export function haproxyConfig(port: number, upstreamPort: number, flavour: Flavour, serverMaxconn = 1000): string {
  const L = DDOS_LIMITS;
  const ddos = flavour === 'ddos' ? `
    stick-table type ip size 1m expire 30s store http_req_rate(10s),http_err_rate(10s),conn_cur
    tcp-request connection track-sc0 src
    tcp-request connection reject if { sc_conn_cur(0) gt ${L.connPerSource} }
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt ${L.reqPerSec * 10} }
    http-request deny deny_status 429 if { sc_http_err_rate(0) gt 20 }` : '';
  return `global
    maxconn 9000
    nbthread 1
    tune.maxaccept 64
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 5s
    timeout http-request ${flavour === 'ddos' ? `${L.headerTimeoutS}s` : '30s'}
    option http-keep-alive
    ${flavour === 'ddos' ? 'option http-buffer-request' : ''}
frontend fe
    bind 127.0.0.1:${port}
    ${ddos}
    default_backend be
backend be
    option forwardfor
    http-reuse always
    server origin 127.0.0.1:${upstreamPort} maxconn ${serverMaxconn}
`;
}

export async function startNginx(upstreamPort: number, flavour: Flavour, cpu: number | null, workers = 1): Promise<ThirdParty | { skipped: string }> {
  if (!tools.nginx) return { skipped: 'nginx is not installed (apt-get install -y nginx)' };
  const dir = tempDir('bench-nginx-');
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxConfig(dir, port, upstreamPort, flavour, workers));
  // -e: the early error log, before the config is read (default /var/log/nginx may not be writable).
  const child = start(tools.nginx, ['-p', dir, '-e', path.join(dir, 'early.log'), '-c', path.join(dir, 'nginx.conf')], { name: 'nginx', cpu, stderr: 'ignore', stopSignal: 'SIGTERM' });
  try { await waitForPort(port, child, 5000); } catch (e) {
    const log = ['early.log', 'error.log'].map((f) => { try { return fs.readFileSync(path.join(dir, f), 'utf8'); } catch { return ''; } }).join('');
    await child.stop();
    return { skipped: `nginx did not start: ${(e as Error).message} ${log.slice(-500)}` };
  }
  return { child, port, dir, name: 'nginx' };
}

export async function startHaproxy(upstreamPort: number, flavour: Flavour, cpu: number | null, serverMaxconn?: number): Promise<ThirdParty | { skipped: string }> {
  if (!tools.haproxy) return { skipped: 'haproxy is not installed (apt-get install -y haproxy)' };
  const dir = tempDir('bench-haproxy-');
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'haproxy.cfg'), haproxyConfig(port, upstreamPort, flavour, serverMaxconn));
  const errFile = path.join(dir, 'haproxy.err');
  const err = fs.openSync(errFile, 'w');
  // -db: stay in the foreground, no daemon, one process.
  const child = start(tools.haproxy, ['-db', '-f', path.join(dir, 'haproxy.cfg')], { name: 'haproxy', cpu, stdout: err, stderr: err, stopSignal: 'SIGTERM' });
  fs.closeSync(err);
  try { await waitForPort(port, child, 5000); } catch (e) {
    await child.stop();
    return { skipped: `haproxy did not start: ${(e as Error).message} ${fs.readFileSync(errFile, 'utf8').slice(-500)}` };
  }
  return { child, port, dir, name: 'haproxy' };
}
