// A recording upstream that parses nothing for the proxy's sake: a plain `net`
// server that keeps every byte each connection delivered and splits them into
// requests with its own strict, minimal HTTP/1.1 reader (CRLF only, one
// Content-Length or a final `chunked`, never both). Whatever the reader finds
// odd is recorded as an anomaly instead of being smoothed over, so a test can
// see exactly what reached the upstream. Each complete request is answered
// 200 with a small body naming it; requests whose head arrived but whose body
// never completed are recorded as incomplete. Binds to loopback only.
import net from 'node:net';
import { once } from 'node:events';

export interface SeenRequest {
  method: string;
  target: string;
  version: string;
  headers: [string, string][];
  body: Buffer;
  /** How the body was framed on the wire towards the upstream. */
  framing: 'none' | 'content-length' | 'chunked';
  /** Both Content-Length and Transfer-Encoding, a non-chunked coding, a bad line … */
  anomalies: string[];
  /** The head arrived but the connection closed before the body was complete. */
  incomplete: boolean;
}

export interface RawOrigin {
  port: number;
  address: string;
  /** Complete and incomplete requests, in arrival order. */
  seen: SeenRequest[];
  /** Every chunk any connection delivered, in arrival order. */
  raw: Buffer[];
  reset(): void;
  close(): Promise<void>;
}

const MAX_BUFFER = 1 << 20;

export function header(r: SeenRequest, name: string): string[] {
  const n = name.toLowerCase();
  return r.headers.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
}

/**
 * Parses one request at the start of `buf` strictly (RFC 9112, CRLF only);
 * `lenientLine` splits the request line on runs of spaces, as §3 allows.
 * Also the reference reader for what a client sent (test/protocol-abuse-generated).
 */
export function parseRequest(buf: Buffer, lenientLine = false): { req: SeenRequest; used: number } | { need: true; req?: SeenRequest } | { fatal: string } {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return buf.length > MAX_BUFFER ? { fatal: 'head too large' } : { need: true };
  const head = buf.subarray(0, end).toString('latin1');
  const lines = head.split('\r\n');
  const anomalies: string[] = [];
  const parts = lenientLine ? lines[0].split(/ +/) : lines[0].split(' ');
  if (parts.length !== 3) anomalies.push(`request line: ${JSON.stringify(lines[0])}`);
  const [method = '', target = '', version = ''] = parts;
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    if (/[\n\0\x0b]/.test(line)) anomalies.push(`control byte in ${JSON.stringify(line)}`);
    const c = line.indexOf(':');
    if (c <= 0 || /[\s]/.test(line.slice(0, c))) { anomalies.push(`bad header line ${JSON.stringify(line)}`); continue; }
    headers.push([line.slice(0, c), line.slice(c + 1).trim()]);
  }
  const req: SeenRequest = { method, target, version, headers, body: Buffer.alloc(0), framing: 'none', anomalies, incomplete: false };
  const cls = header(req, 'content-length');
  const tes = header(req, 'transfer-encoding');
  if (cls.length && tes.length) anomalies.push('both Content-Length and Transfer-Encoding');
  if (cls.length > 1) anomalies.push(`${cls.length} Content-Length lines`);
  if (tes.length > 1) anomalies.push(`${tes.length} Transfer-Encoding lines`);
  let pos = end + 4;
  if (tes.length) {
    if (tes.join(',').trim().toLowerCase() !== 'chunked') anomalies.push(`Transfer-Encoding ${JSON.stringify(tes.join(','))}`);
    req.framing = 'chunked';
    const chunks: Buffer[] = [];
    for (;;) {
      const le = buf.indexOf('\r\n', pos);
      if (le < 0) return { need: true, req };
      const sizeLine = buf.subarray(pos, le).toString('latin1');
      const m = /^([0-9a-fA-F]{1,8})(;[!#$%&'*+.^_`|~0-9A-Za-z-]+(=[!#$%&'*+.^_`|~0-9A-Za-z-]*)?)*$/.exec(sizeLine);
      if (!m) return { fatal: `bad chunk size line ${JSON.stringify(sizeLine)}` };
      const size = parseInt(m[1], 16);
      pos = le + 2;
      if (size === 0) {
        // Trailers up to an empty line.
        for (;;) {
          const te = buf.indexOf('\r\n', pos);
          if (te < 0) return { need: true, req };
          const t = buf.subarray(pos, te).toString('latin1');
          pos = te + 2;
          if (t === '') break;
          anomalies.push(`trailer ${JSON.stringify(t)}`);
        }
        req.body = Buffer.concat(chunks);
        return { req, used: pos };
      }
      if (buf.length < pos + size + 2) return { need: true, req };
      chunks.push(buf.subarray(pos, pos + size));
      if (buf.subarray(pos + size, pos + size + 2).toString('latin1') !== '\r\n') return { fatal: 'chunk data not followed by CRLF' };
      pos += size + 2;
    }
  }
  if (cls.length) {
    req.framing = 'content-length';
    if (!/^\d{1,15}$/.test(cls[0]) || cls.some((v) => v !== cls[0])) return { fatal: `Content-Length ${JSON.stringify(cls)}` };
    const n = Number(cls[0]);
    if (buf.length < pos + n) return { need: true, req };
    req.body = Buffer.from(buf.subarray(pos, pos + n));
    return { req, used: pos + n };
  }
  return { req, used: pos };
}

export async function startRawOrigin(host = '127.0.0.1'): Promise<RawOrigin> {
  const seen: SeenRequest[] = [];
  const raw: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    let pending: SeenRequest | undefined;
    s.on('data', (chunk: Buffer) => {
      raw.push(chunk);
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const r = parseRequest(buf);
        if ('fatal' in r) {
          seen.push({ method: '', target: '', version: '', headers: [], body: buf, framing: 'none', anomalies: [r.fatal], incomplete: true });
          s.destroy();
          return;
        }
        if ('need' in r) { pending = r.req; return; }
        pending = undefined;
        seen.push(r.req);
        buf = buf.subarray(r.used);
        const text = `seen ${r.req.method} ${r.req.target} ${r.req.body.length}`;
        s.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${text.length}\r\n\r\n${text}`);
      }
    });
    s.on('close', () => {
      sockets.delete(s);
      if (pending) { pending.incomplete = true; seen.push(pending); pending = undefined; }
      else if (buf.length) seen.push({ method: '', target: '', version: '', headers: [], body: buf, framing: 'none', anomalies: ['partial head'], incomplete: true });
    });
  });
  server.listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, address: `${host}:${port}`, seen, raw,
    reset() { seen.length = 0; raw.length = 0; },
    close: () => { for (const s of sockets) s.destroy(); return new Promise((r) => server.close(() => r())); },
  };
}

/** Complete requests only. */
export const complete = (o: RawOrigin) => o.seen.filter((r) => !r.incomplete);
