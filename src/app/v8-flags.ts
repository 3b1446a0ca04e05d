// V8 settings for a proxy's allocation pattern, set before anything else runs
// (imported first by the CLI and by each worker process's entry).
//
// Why no allocation-site pretenuring: V8 watches each allocation site and, when
// nearly every object from one survives a scavenge, allocates the site's later
// objects straight in old space. A proxy's per-request objects live a few
// milliseconds, but under load some sites (timers, pooled-connection state,
// per-request records) see whole cohorts survive one scavenge; once such a site
// is tenured, each request's short-lived objects are born old and point at young
// ones, and every scavenge walks them. Measured on the throughput bench
// (`BENCH_SCRUBBER_NODE_ARGS=--trace-gc`): in about half the runs the same build
// spent 700–1000 ms per 5 s in scavenges of 20–40 ms each (p99 33 ms), against
// 170–190 ms and p99 ~10 ms in every run with pretenuring off. Objects that do
// live long (the source table is typed arrays) pay one extra copy at most.
import v8 from 'node:v8';

v8.setFlagsFromString('--no-allocation-site-pretenuring');
