// Extraction: what a request, or a finished request, tells about its source,
// as events for the detector rules (rules.ts: EVENTS). Deterministic, no I/O
// and no clock: a unit test feeds a head or an observation and reads the
// pending events. The source's small memory (recent paths, User-Agents, pages
// and assets seen) and the domain's knowledge (static paths, usual body sizes)
// are updated here, since they are what makes an event "new".
import type { RequestHead } from '../http/head.ts';
import type { Observation } from '../observe/observation.ts';
import type { SourceState } from './sources.ts';
import type { DomainKnowledge } from './knowledge.ts';
import { EVENT_INDEX as E } from './rules.ts';
import { hashRange, headerOddness, userAgentHash, isAssetPath, isHtml, isStaticType, pathEnd, queryKeysHash } from './signals.ts';

/** An answer of a static type is learned as a static path only when the application gave it this fast at most (or
 *  within the domain's usual latency, for an origin far away): a file, not a computation. */
const STATIC_MS = 25;

/** How much of a 404 a found (2xx/3xx, non-asset) answer of the same source takes back: see answerEvents. */
export const FOUND_OFFSETS_MISS = 0.5;

/** Events of a request as it arrives, before any answer. */
export function requestEvents(head: RequestHead, s: SourceState, p: Float64Array): void {
  p[E.request] += 1;
  const odd = headerOddness(head.headers);
  if (odd) p[E.badHeaders] += odd;
  const ua = head.headers['user-agent'];
  if (ua && s.newUserAgent(userAgentHash(ua))) p[E.uaChange] += 1;
}

/** Whether a request may pass a challenge untouched: a static asset, obviously by path or because the domain served it as static. */
export function staticRequest(url: string, k: DomainKnowledge | undefined): boolean {
  const end = pathEnd(url);
  return isAssetPath(url, end) || (k?.staticPaths.has(hashRange(url, 0, end)) ?? false);
}

/**
 * Events of a request the upstream answered (or the proxy answered on its behalf).
 * `trusted` says whether the source may teach the domain (a browsing history and a low score),
 * so that a flood cannot teach a path its own usual size.
 */
export function answerEvents(o: Observation, s: SourceState, k: DomainKnowledge, p: Float64Array, trusted: boolean): void {
  const url = o.path;
  const end = pathEnd(url);
  const assetPath = isAssetPath(url, end);
  const asset = isStaticType(o.contentType) || (o.status === 304 && assetPath);
  const ph = hashRange(url, 0, end);
  if (o.proxyReason === 'body-too-slow' || o.slowReader === true) p[E.slow] += 1;
  if (o.method === 'POST' || o.method === 'PUT' || o.method === 'PATCH') {
    p[E.post] += 1;
    // A source with a browsing history is a person: one who sends photos to a chat that mostly receives text is
    // uploading, not flooding (the rule is for bodies posted by sources that never browsed).
    if (k.bodySizes.oversized(ph, o.bytesIn)) { if (!trusted) p[E.oversizedBody] += 1; }
    else if (o.outcome === 'passed' && o.status < 400 && trusted) k.bodySizes.learn(ph, o.bytesIn);
  }
  // What the source cost the application: not its own upload time nor its wait in the queue.
  if (o.outcome === 'passed' && o.noLatency !== true) p[E.upstreamSeconds] += o.upstreamMs / 1000;
  // Assets stay out of the path ring: a page's dozens of assets would push the pages out.
  const rp = ph ^ k.salt; // the path as the ring keeps it: of this site
  const seen = asset ? 0 : s.notePath(rp, queryKeysHash(url, end));
  if (seen === 1) p[E.newPath] += 1;
  else if (seen === 2) p[E.cacheBust] += 1;
  if (o.status < 400) {
    if (asset) {
      s.assets++;
      // Static is cheap: a file read and sent. An image made on the fly (a thumbnailer, Next.js's /_next/image) answers
      // an image type at a search's cost; learned as static it would skip the challenge and the newcomers' slice.
      if (o.status === 200 && isStaticType(o.contentType)) {
        if (o.upstreamMs <= Math.max(STATIC_MS, k.traffic.state.baselineLatencyMs)) k.staticPaths.set(ph, true);
        else k.staticPaths.delete(ph);
      }
    } else if (o.status < 300 && isHtml(o.contentType)) {
      s.pages++;
      // A new page while no asset was ever loaded: a browser would have loaded some after the first page.
      if (s.assets === 0 && s.pages > 1 && seen === 1) p[E.pageNoAssets] += 1;
    }
  }
  // A miss counts when the path (or its set of query keys) is new to the source: a scan spreads over paths, while a
  // client polling one resource until it exists (a job's result, an upload) misses the same path again and again.
  if (o.status === 404 || o.status === 410) { if (!assetPath && seen !== 0) { p[E.notFound] += 1; s.lastMissed = true; } }
  else if (o.status >= 400 && o.status < 500) p[E.error] += 1;
  // What makes a scan is the share of misses, not their count: a scanner's answers are nearly all 404s, while many
  // people behind one address (an app's users at a carrier NAT, each with its routine 404) miss now and then among
  // many found answers. A found page or call takes back part of a miss (FOUND_OFFSETS_MISS): the source's misses
  // are judged past a third of its answers, and a scanner must send two real requests per probe to hide.
  // A path the source just missed and now finds (a sync client's HEAD 404, then its PUT 201: it created it) takes the
  // whole miss back; a scanner cannot make what it missed exist.
  else if (o.status < 400 && !assetPath && !asset) {
    const created = s.lastMissed && seen === 0 && s.isNewestPath(rp);
    p[E.notFound] -= created ? 1 : FOUND_OFFSETS_MISS;
    if (created || seen !== 0) s.lastMissed = false;
  }
}
