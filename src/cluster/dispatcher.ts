// The primary's listening sockets. A connection is accepted paused (not one
// byte read here), checked against the blacklist by Node at accept (a banned
// source costs the primary one BlockList lookup and no handover), and handed to
// the worker that owns its source; TLS is terminated there.
import net from 'node:net';
import type { Config, HostPort } from '../config/schema.ts';
import { clientAddress } from '../upstream/headers.ts';
import { sourceKey } from '../listen/source.ts';
import type { WorkerPool } from './pool.ts';

type Listening = net.Server & { blockList: net.BlockList };

export class Dispatcher {
  private readonly servers: { server: Listening; tls: boolean }[] = [];
  private readonly pool: WorkerPool;
  private readonly blockList: net.BlockList;

  /** Whether a source may go to any worker (it is whitelisted: no history to keep in one place). */
  private readonly spread: (source: string) => boolean;

  constructor(pool: WorkerPool, blockList: net.BlockList, spread: (source: string) => boolean) { this.pool = pool; this.blockList = blockList; this.spread = spread; }

  /** Plain listeners first, then TLS ones: the index is how a worker finds its server for the connection. */
  async listen(config: Config): Promise<void> {
    const all: [HostPort, boolean][] = [...config.listen.map((hp) => [hp, false] as [HostPort, boolean]), ...config.tls.listen.map((hp) => [hp, true] as [HostPort, boolean])];
    for (const [i, [hp, tls]] of all.entries()) {
      const server = net.createServer({ pauseOnConnect: true, noDelay: true }) as Listening;
      server.blockList = this.blockList;
      server.on('connection', (socket) => {
        socket.on('error', () => {});
        const source = sourceKey(clientAddress(socket.remoteAddress));
        this.pool.dispatch(i, source, socket, this.spread(source));
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(hp.port, hp.host, () => { server.off('error', reject); resolve(); });
      });
      this.servers.push({ server, tls });
    }
  }

  addresses(): { host: string; port: number; tls: boolean }[] {
    return this.servers.map(({ server, tls }) => { const a = server.address() as net.AddressInfo; return { host: a.address, port: a.port, tls }; });
  }

  /** Stops accepting at once. Not awaited: a server whose sockets went to child processes calls back only once
   *  the children closed every one of them, and draining those is the workers' job (they are told next). */
  close(): void {
    for (const { server } of this.servers) server.close();
  }
}
