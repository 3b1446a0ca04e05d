// A throwaway CA and leaf certificates made with the openssl CLI, for HTTPS tests.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { tempDir } from './servers.ts';

export interface TestPki { dir: string; ca: string; leaf(name: string): { cert: string; key: string } }

export function makePki(): TestPki {
  const dir = tempDir('scrubber-pki-');
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Scrubber Test CA');
  return {
    dir,
    ca: path.join(dir, 'ca.pem'),
    leaf(name: string) {
      const ext = path.join(dir, `${name}.ext`);
      fs.writeFileSync(ext, `subjectAltName=DNS:${name}\n`);
      run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', ext);
      return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
    },
  };
}

/** A real ClientHello, as Node's TLS client writes it (captured by a plain TCP listener that never answers). */
export async function capturedClientHello(servername?: string): Promise<Buffer> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const got = new Promise<Buffer>((resolve) => server.once('connection', (s) => s.once('data', (b: Buffer) => { resolve(b); s.destroy(); })));
  const c = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', servername, rejectUnauthorized: false });
  c.on('error', () => {});
  const b = await got;
  c.destroy();
  server.close();
  return b;
}
