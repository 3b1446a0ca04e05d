// Reads a new TLS connection's ClientHello without answering it, so that its
// SNI (sni.ts) can route it before any TLS stack sees it (passthrough).
//
// The hello may arrive in many pieces (TCP segments, TLS records). Each piece
// must cost in proportion to its own size, never to everything read so far: a
// client dripping a hello byte by byte, or record by record, would otherwise
// make the proxy copy and re-parse the whole buffer for every piece (quadratic:
// seconds of CPU per connection). So the bytes go into one buffer grown by
// doubling, and the parser walks at most MAX_HELLO_RECORDS record headers.
import type net from 'node:net';
import { MAX_HELLO, parseClientHello, type HelloResult } from './sni.ts';

/**
 * Reads from `raw` until its ClientHello is complete, malformed, split over too many records or too large; then stops
 * reading (the socket is paused) and hands over everything read, for the caller to pass on or put back.
 */
export function peekClientHello(raw: net.Socket, done: (seen: Buffer, r: HelloResult) => void): void {
  let buf: Buffer | null = null;
  let len = 0;
  const onData = (chunk: Buffer) => {
    // The usual case: the whole hello in the first piece, nothing copied.
    if (buf === null) { buf = chunk; len = chunk.length; }
    else {
      if (len + chunk.length > buf.length) {
        const grown = Buffer.allocUnsafe(Math.max(2 * buf.length, len + chunk.length));
        buf.copy(grown, 0, 0, len);
        buf = grown;
      }
      chunk.copy(buf, len);
      len += chunk.length;
    }
    const seen = buf.subarray(0, len);
    const r = parseClientHello(seen);
    if (r.kind === 'more' && len <= MAX_HELLO + 64) return;
    raw.off('data', onData);
    raw.pause();
    done(seen, r);
  };
  raw.on('data', onData);
}
