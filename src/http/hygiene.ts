// Protocol hygiene that Node's parser lets through. Pure: looks at the parsed
// request and says whether it must be refused before anything is forwarded.
export interface HygieneProblem { status: 400 | 405 | 431; reason: 'bad-request' | 'headers-too-large' | 'method-not-allowed' }

const FORBIDDEN_METHODS = new Set(['CONNECT', 'TRACE', 'TRACK']);

export function checkRequest(method: string, url: string, rawHeaders: string[], maxHeaderCount: number): HygieneProblem | null {
  if (rawHeaders.length / 2 > maxHeaderCount) return { status: 431, reason: 'headers-too-large' };
  if (FORBIDDEN_METHODS.has(method)) return { status: 405, reason: 'method-not-allowed' };
  // Origin-form only: an absolute-form target could name another host than Host. No fragment (RFC 9112 has none in a
  // request target; a browser never sends one): "/search#x.js" read as an asset here and as /search by the application
  // passed the challenge; HAProxy refuses it too (CVE-2023-45539).
  if (!(url.startsWith('/') || (url === '*' && method === 'OPTIONS')) || url.includes('#')) return { status: 400, reason: 'bad-request' };
  let hosts = 0;
  let cl: string | null = null;
  let codings = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const n = rawHeaders[i].length;
    // Cheap length filter before the case-insensitive compare.
    if (n === 4 && rawHeaders[i].toLowerCase() === 'host') hosts++;
    else if (n === 17 && rawHeaders[i].toLowerCase() === 'transfer-encoding') {
      // Only a single plain "chunked": anything else leaves the body length to the reader's guess, and a coding
      // before it (gzip, chunked) would be dropped on the way, since the upstream request is re-framed.
      if (++codings > 1 || rawHeaders[i + 1].trim().toLowerCase() !== 'chunked') return { status: 400, reason: 'bad-request' };
    } else if (n === 7 && rawHeaders[i].toLowerCase() === 'upgrade') {
      // h2c would turn the connection into an HTTP/2 tunnel to the upstream: every request inside it would pass
      // the per-request checks by. Refused in any position of the token list.
      if (/(^|,)\s*h2c\s*(,|$)/i.test(rawHeaders[i + 1])) return { status: 400, reason: 'bad-request' };
    } else if (n === 14 && rawHeaders[i].toLowerCase() === 'content-length') {
      // Two different Content-Length values are a smuggling attempt.
      if (cl !== null && cl !== rawHeaders[i + 1]) return { status: 400, reason: 'bad-request' };
      cl = rawHeaders[i + 1];
    }
  }
  if (hosts !== 1) return { status: 400, reason: 'bad-request' };
  return null;
}
