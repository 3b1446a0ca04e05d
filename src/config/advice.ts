// Settings that are each valid but contradict one another: the proxy runs as
// configured (the smaller bound wins), and says so at start, at every reload
// and in `scrubber check` (still exit 0: a config that runs is not refused for
// a choice the operator may have made on purpose). Pure.
import type { Config } from './schema.ts';

export function configWarnings(c: Config): string[] {
  const out: string[] = [];
  const l = c.limits;
  if (l.maxBodyBytes > l.postBudgetBytes) {
    out.push(`limits.maxBodyBytes: ${l.maxBodyBytes} is above limits.postBudgetBytes (${l.postBudgetBytes}): a body larger than the budget always gets 413 (post-budget)`);
  }
  const per = c.upstream.maxConnections;
  if (per > 0) {
    c.domains.forEach((d, i) => {
      const most = per * d.upstreams.length;
      if (!d.passthrough && d.maxInflight > most) {
        out.push(`domains[${i}].maxInflight: ${d.maxInflight} is above what its upstreams take at once (upstream.maxConnections ${per} × ${d.upstreams.length} upstream${d.upstreams.length > 1 ? 's' : ''} = ${most}): past that, requests wait in the queue for a free connection`);
      }
    });
  }
  return out;
}

/** One warning line per contradiction (start and reload). */
export function logConfigWarnings(log: { warn(o: object, msg: string): void }, c: Config): void {
  for (const problem of configWarnings(c)) log.warn({ problem }, 'config: settings that contradict each other (the smaller bound applies)');
}
