// Request bodies are read at the edge before the request takes an upstream
// slot (limits.bufferBodyBytes), as nginx does with proxy_request_buffering:
// a client that sends its body at 10 bytes a second then holds a connection
// to the proxy, which is cheap, instead of a worker of the application,
// which is not; the minimum-rate check (BodyMeter) cuts it here.
//
// A body that ends within the bound is handed on whole (a Buffer: the upstream
// gets it at once, and a failed connect can resend it to the next upstream).
// A longer one is handed on as a stream that replays what was read, then the
// rest as it comes, so memory stays bounded by the bound.
import { PassThrough, type Readable } from 'node:stream';

export type Buffered =
  | { ok: true; body: Buffer | Readable }
  | { ok: false; error: Error };

/** Reads up to `maxBytes` of `body`; `done` is called once (never after `cancel()`). */
export function bufferBody(body: Readable, maxBytes: number, done: (r: Buffered) => void): { cancel(): void } {
  const chunks: Buffer[] = [];
  let size = 0;
  let settled = false;
  const finish = (r: Buffered | null) => {
    if (settled) return;
    settled = true;
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('error', onError);
    if (r) done(r);
  };
  const onData = (chunk: Buffer) => {
    chunks.push(chunk);
    size += chunk.length;
    if (size < maxBytes) return;
    body.pause();
    // Replay what was read, then the rest; the meter's errors (too slow, too large) reach the reader.
    const rest = new PassThrough();
    for (const c of chunks) rest.write(c);
    body.pipe(rest);
    body.once('error', (e) => rest.destroy(e));
    finish({ ok: true, body: rest });
  };
  const onEnd = () => finish({ ok: true, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size) });
  const onError = (error: Error) => finish({ ok: false, error });
  body.on('data', onData);
  body.once('end', onEnd);
  body.once('error', onError);
  return { cancel: () => finish(null) };
}
