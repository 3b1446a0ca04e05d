// The entry of a worker process (forked by the primary, cluster/pool.ts).
// Messages that arrive before the worker is built (decisions made while it
// starts) wait and are applied in order once it is.
import './v8-flags.ts';
import type net from 'node:net';
import { createLogger } from '../log.ts';
import type { FromWorker, ToWorker } from '../cluster/protocol.ts';
import { startWorker, type Worker } from './worker.ts';

const send = (m: FromWorker) => { if (process.connected) process.send!(m); };
// The primary coordinates stopping and reloading; a terminal's Ctrl-C or a service manager signals the whole group.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => {});
// Without its primary a worker has no connections to serve and no one to report to.
process.on('disconnect', () => process.exit(0));

let worker: Worker | null = null;
const early: [ToWorker, net.Socket | undefined][] = [];
process.on('message', (m: ToWorker, socket?: net.Socket) => {
  if (worker) { worker.handle(m, socket); return; }
  if (m.t !== 'init') { early.push([m, socket]); return; }
  const log = createLogger(m.init.config.log.level).child({ worker: m.init.index });
  try {
    worker = startWorker(m.init, send, log, () => { if (process.connected) process.send!({ t: 'stopped' } satisfies FromWorker, () => process.exit(0)); else process.exit(0); });
  } catch (e) {
    send({ t: 'failed', error: (e as Error).message });
    process.exit(1);
  }
  for (const [e, s] of early.splice(0)) worker.handle(e, s);
  send({ t: 'ready' });
});
