// The seed's "limit on the total size of simultaneous POST requests": the sum
// of the declared sizes of all request bodies in flight is bounded.
export class BodyBudget {
  inFlight = 0;
  limit: number;
  constructor(limit: number) { this.limit = limit; }
  /** Reserves `bytes`; false (and nothing reserved) when that would pass the limit. */
  reserve(bytes: number): boolean {
    if (bytes <= 0) return true;
    if (this.inFlight + bytes > this.limit) return false;
    this.inFlight += bytes;
    return true;
  }
  release(bytes: number): void { if (bytes > 0) this.inFlight = Math.max(0, this.inFlight - bytes); }
}

/** Declared body size of a request: Content-Length, or for chunked bodies the most it may grow to — at least 1, since
 *  0 means no body: with maxBodyBytes 0 a chunked body was not read at all, and went upstream without its bytes. */
export function declaredBodySize(contentLength: string | undefined, chunked: boolean, maxBodyBytes: number): number {
  if (contentLength !== undefined) return Number(contentLength);
  return chunked ? Math.max(1, maxBodyBytes) : 0;
}
