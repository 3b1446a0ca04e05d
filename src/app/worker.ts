// One worker process of several (primary.ts): the same edge as one process
// (edge.ts) with its listeners unbound, fed the connections the primary hands
// over. Its decisions go up the WorkerBus, its store writes up the WorkerStore,
// its counts up as a report each second (and when the primary asks, so that an
// admin answer is up to date).
import type net from 'node:net';
import type { Logger } from '../log.ts';
import { Recorder } from '../stats/recorder.ts';
import { WorkerBus, WorkerStore, type SendUp } from '../cluster/worker-links.ts';
import { shardOf, workerConfig, type ToWorker, type WorkerInit, type WorkerReport } from '../cluster/protocol.ts';
import { applyConfig, buildEdge } from './edge.ts';
import type { Sample } from '../detect/attack-mode.ts';
import { TICK_MS } from './app.ts';
import { holdConfigFiles } from '../config/files.ts';

/** How often a worker sends what it counted (the primary's totals lag by at most this much, unless it asks). */
const REPORT_MS = 1000;

export interface Worker {
  handle(m: ToWorker, socket?: net.Socket): void;
}

/** `exit` says 'stopped' to the primary and ends the process once that is sent. */
export function startWorker(init: WorkerInit, send: SendUp, log: Logger, exit: () => void): Worker {
  const now = Date.now;
  // Its TLS from the bytes the primary read, not the disk (config/files.ts).
  holdConfigFiles(init.files);
  const config = workerConfig(init.config, init.workers, init.index);
  const bus = new WorkerBus(send);
  const store = new WorkerStore(init, send);
  // Each domain's seconds go up for the primary to judge attack mode on the node's whole traffic (one message a tick).
  const samples: [string, Sample][] = [];
  // Started within a change of the challenge secret: built on the one before, then given the new one (so both pass).
  const before = init.previousSecret && init.previousSecret.until > now() ? Buffer.from(init.previousSecret.key, 'base64') : null;
  const edge = buildEdge(config, { log, now, store, bus, secret: before ?? store.secret(), upstreamRelay: (id, firstOk, runs) => send({ t: 'upstream', id, firstOk, runs }), attackSamples: (d, s) => samples.push([d, s]) });
  const { filter, pipeline, listeners, upstreams } = edge;
  for (const [id, healthy] of init.health) upstreams.mirror(id, healthy);
  if (before) bus.deliverSecret(store.secret());
  // A copied token's networks may land on several workers: the primary counts them for the node.
  if (filter.tokens) filter.tokens.onNetwork = (id, net) => send({ t: 'token', id, net });
  for (const id of init.revokedTokens) filter.tokens?.revoke(id, now());
  for (const a of init.attacks) filter.detector.attacks.nodeAttack(a.domain, { ...a, suspects: false }, now());
  const recorder = new Recorder(now);
  let requests = 0;
  edge.observers.push((o) => { requests++; recorder.record(o); });
  edge.passthroughs.push((o) => recorder.record(o));
  edge.pipeline.tunnels.onBytes = (d, i, o) => recorder.tunnelBytes(d, i, o);
  listeners.setTicketKeys(Buffer.from(init.ticketKey, 'base64'));
  listeners.prepare(config);
  // A ban made elsewhere (an operator, another node): the source starts over when it ends, as in one process.
  filter.decisions.watch({ onBan: (s) => filter.detector.forget(s) });

  const report = (): WorkerReport => {
    const p = recorder.pending();
    const mem = process.memoryUsage();
    const r: WorkerReport = {
      domains: p.domains.map((d) => ({ domain: d.domain, t: d.t, c: Array.from(d.c) })),
      globals: p.globals.map((g) => ({ t: g.t, g: Array.from(g.g) })),
      counters: filter.snapshot().counters,
      attack: [...filter.detector.knowledge.entries()].map(([name, k]) => [name, { ...k.traffic.state }]),
      queues: [...pipeline.queues].map(([d, q]) => [d, q.active, q.queued, q.limit]),
      requests,
      memory: { rss: mem.rss, heapUsed: mem.heapUsed },
    };
    // pending() hands out the live arrays: copied above, now they may start again from zero.
    recorder.commit();
    requests = 0;
    return r;
  };
  const tick = setInterval(() => {
    filter.tick();
    edge.originTick.step();
    if (samples.length) send({ t: 'samples', s: samples.splice(0) });
  }, TICK_MS);
  const reporter = setInterval(() => send({ t: 'report', id: 0, r: report() }), REPORT_MS);
  let stopping = false;

  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const drainMs = edge.runtime.current.config.shutdown.drainTimeoutMs;
    const cut = setTimeout(() => pipeline.closeTunnels(), drainMs);
    await listeners.close(drainMs);
    clearTimeout(cut);
    clearInterval(tick);
    edge.originTick.stop();
    clearInterval(reporter);
    await filter.close();
    await upstreams.close();
    // The last counts, then goodbye (exit() sends it): nothing counted is lost on a clean stop.
    send({ t: 'report', id: 0, r: report() });
    exit();
  };

  return {
    handle(m, socket) {
      if (m.t === 'conn') { if (socket && !stopping) listeners.accept(m.l, socket); else socket?.destroy(); }
      else if (m.t === 'decision') bus.deliver(m.d);
      else if (m.t === 'health') upstreams.mirror(m.id, m.healthy);
      else if (m.t === 'attack') filter.detector.attacks.nodeAttack(m.domain, m.a, now());
      else if (m.t === 'revoke') filter.tokens?.revoke(m.id, now());
      else if (m.t === 'offender') filter.decisions.adoptOffender(m.ip, m.r);
      else if (m.t === 'home') listeners.connections.release((s) => shardOf(s, init.workers) === m.index && !filter.decisions.isWhitelisted(s));
      else if (m.t === 'tickets') listeners.setTicketKeys(Buffer.from(m.key, 'base64'));
      else if (m.t === 'secret') bus.deliverSecret(Buffer.from(m.key, 'base64'));
      else if (m.t === 'collect') send({ t: 'report', id: m.id, r: report() });
      else if (m.t === 'reload') {
        // The primary put this config in force, with the files it read (config/files.ts): a worker applies the same
        // bytes. One that still cannot would serve another config for good: it ends, and the one started in its place
        // takes the primary's config and files.
        holdConfigFiles(m.files);
        try { applyConfig(edge, workerConfig(m.config, init.workers, init.index)); } catch (e) {
          log.error({ err: e }, 'config reload failed in this worker; it restarts on the config in force');
          process.exit(1);
        }
        log.level = m.config.log.level;
        for (const [id, healthy] of m.health) upstreams.mirror(id, healthy);
        log.info({ domains: m.config.domains.length }, 'config reloaded');
      } else if (m.t === 'stop') void stop();
    },
  };
}
