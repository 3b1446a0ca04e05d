// Shutdown is bounded (issue 12, item 1): whatever is open — an upgraded
// tunnel whose client sent its FIN while the upstream keeps its side open, a
// client that reads nothing of a large answer, a request waiting in the
// domain's queue — SIGTERM ends the real process within
// shutdown.drainTimeoutMs plus a second, and what was decided is saved.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import http from 'node:http';
import { once } from 'node:events';
import { startOrigin, freePort, tempDir, request, sleep } from './helpers/servers.ts';

const BIN = path.resolve('bin/scrubber.js');
const DRAIN = 1000;

describe('SIGTERM with everything open', () => {
  it('exits within drainTimeoutMs + 1 s and keeps its bans', async () => {
    // The upstream: upgrades are accepted and never closed from its side; /big is 32 MiB; /slow answers after 10 s.
    const held: net.Socket[] = [];
    const origin = await startOrigin((req, res) => {
      if (req.url === '/big') { res.writeHead(200, { 'content-length': 32 * 1024 * 1024 }); res.end(Buffer.alloc(32 * 1024 * 1024)); return; }
      setTimeout(() => { res.writeHead(200); res.end('late'); }, 10_000).unref();
    });
    origin.server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
      held.push(socket);
      socket.on('error', () => {});
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.on('end', () => {}); // keeps its own half open
    });
    const dir = tempDir();
    const port = await freePort(), admin = await freePort();
    const file = path.join(dir, 'c.json');
    fs.writeFileSync(file, JSON.stringify({
      listen: [{ host: '127.0.0.1', port }], admin: { host: '127.0.0.1', port: admin }, state: { dir: path.join(dir, 'data') },
      shutdown: { drainTimeoutMs: DRAIN }, filter: { mode: 'off' }, limits: { bufferBodyBytes: 0 },
      domains: [{ name: 'sd.test', upstreams: [origin.address], maxInflight: 1 }],
    }));
    const start = () => {
      const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let logs = '';
      child.stdout!.on('data', (d) => { logs += d; });
      child.stderr!.on('data', (d) => { logs += d; });
      return { child, logs: () => logs };
    };
    let p = start();
    for (let i = 0; i < 200 && !p.logs().includes('scrubber started'); i++) await sleep(50);
    try {
      expect((await request(`http://127.0.0.1:${admin}/api/blacklist/127.0.99.1`, { method: 'PUT', body: '{"ttlSeconds":3600,"reason":"kept"}' })).status).toBe(200);
      // A tunnel, then the client's FIN (half-close) while the upstream keeps its half.
      const ws = net.connect(port, '127.0.0.1');
      ws.on('error', () => {});
      await once(ws, 'connect');
      ws.write('GET /ws HTTP/1.1\r\nHost: sd.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      await once(ws, 'data');
      ws.end();
      // A reader of nothing.
      const lazy = net.connect(port, '127.0.0.1');
      lazy.on('error', () => {});
      await once(lazy, 'connect');
      lazy.pause();
      lazy.write('GET /big HTTP/1.1\r\nHost: sd.test\r\n\r\n');
      // One request at the application, one waiting in the queue.
      const a = net.connect(port, '127.0.0.1'); a.on('error', () => {});
      const b = net.connect(port, '127.0.0.1'); b.on('error', () => {});
      a.write('GET /slow HTTP/1.1\r\nHost: sd.test\r\n\r\n');
      await sleep(100);
      b.write('GET /slow2 HTTP/1.1\r\nHost: sd.test\r\n\r\n');
      await sleep(300);

      const t0 = performance.now();
      p.child.kill('SIGTERM');
      const [code] = await once(p.child, 'exit');
      const took = performance.now() - t0;
      expect(code).toBe(0);
      expect(took).toBeLessThan(DRAIN + 1000);
      for (const s of [ws, lazy, a, b]) s.destroy();

      // What was decided survived.
      p = start();
      for (let i = 0; i < 200 && !p.logs().includes('scrubber started'); i++) await sleep(50);
      const r = JSON.parse((await request(`http://127.0.0.1:${admin}/api/blacklist/127.0.99.1`)).body);
      expect(r).toMatchObject({ listed: true, reason: 'kept' });
    } finally {
      p.child.kill('SIGKILL');
      for (const s of held) s.destroy();
      await origin.close();
    }
  }, 30_000);
});
