// Reads the server name (SNI) from a TLS ClientHello without decrypting
// anything, so that a passthrough domain's connection can be routed before
// the proxy's own TLS stack sees it. Pure: bytes in, answer out.
//
// The ClientHello may arrive split across TCP segments and across TLS records
// (RFC 8446 §5.1 allows a handshake message to span records); the caller feeds
// everything read so far and asks again while the answer is "more".

export type HelloResult =
  | { kind: 'more' }
  /** sni is null when the ClientHello names no host. */
  | { kind: 'done'; sni: string | null }
  | { kind: 'error'; reason: string };

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const MAX_RECORD = 16384 + 2048; // TLSCiphertext bound (RFC 8446 §5.2); a plaintext hello is smaller
/** A ClientHello larger than this is refused (real ones, post-quantum key shares included, are a few KB). */
export const MAX_HELLO = 64 * 1024;
/**
 * Most records a ClientHello may be split over. Real clients send it in one record (it fits: a few KB against 16 KB),
 * tools that split it to hide the SNI from DPI in two or a few; past this, splitting has no use but to make the
 * reassembly cost (each record is read and copied) and to hold the connection open record by record.
 */
export const MAX_HELLO_RECORDS = 16;
export const TOO_MANY_RECORDS = 'ClientHello split over too many records';

const MORE: HelloResult = { kind: 'more' };
const err = (reason: string): HelloResult => ({ kind: 'error', reason });

/** Looks for a complete ClientHello at the start of buf and returns its SNI. */
export function parseClientHello(buf: Uint8Array): HelloResult {
  // Reassemble the handshake message from the leading handshake records.
  const parts: Uint8Array[] = [];
  let have = 0;
  let need = -1; // handshake message length incl. its 4-byte header, once known
  let off = 0;
  while (need < 0 || have < need) {
    if (parts.length === MAX_HELLO_RECORDS) return err(TOO_MANY_RECORDS);
    if (buf.length - off < 5) return buf.length - off > 0 && buf[off] !== RECORD_HANDSHAKE ? err('not a TLS handshake record') : MORE;
    if (buf[off] !== RECORD_HANDSHAKE) return err('not a TLS handshake record');
    if (buf[off + 1] !== 0x03) return err('unknown record version');
    const len = (buf[off + 3] << 8) | buf[off + 4];
    if (len === 0 || len > MAX_RECORD) return err('bad record length');
    const end = off + 5 + len;
    const avail = Math.min(end, buf.length);
    parts.push(buf.subarray(off + 5, avail));
    have += avail - off - 5;
    if (need < 0 && have >= 4) {
      const hs = parts.length === 1 ? parts[0] : concat(parts, 4);
      if (hs[0] !== HANDSHAKE_CLIENT_HELLO) return err('first handshake message is not a ClientHello');
      need = 4 + ((hs[1] << 16) | (hs[2] << 8) | hs[3]);
      if (need > MAX_HELLO) return err('ClientHello too large');
    }
    if (need >= 0 && have >= need) break;
    if (avail < end) return MORE;
    off = end;
  }
  const msg = concat(parts, need);
  return readHello(msg.subarray(4));
}

function concat(parts: Uint8Array[], limit: number): Uint8Array {
  if (parts.length === 1) return parts[0].subarray(0, limit);
  const out = new Uint8Array(Math.min(limit, parts.reduce((n, p) => n + p.length, 0)));
  let o = 0;
  for (const p of parts) { if (o >= out.length) break; const n = Math.min(p.length, out.length - o); out.set(p.subarray(0, n), o); o += n; }
  return out;
}

function readHello(b: Uint8Array): HelloResult {
  let p = 2 + 32; // legacy_version, random
  const u8 = () => (p < b.length ? b[p++] : -1);
  const u16 = () => (p + 2 <= b.length ? ((b[p++] << 8) | b[p++]) : -1);
  const skip = (n: number) => { if (n < 0 || p + n > b.length) return false; p += n; return true; };
  if (p > b.length) return err('truncated ClientHello');
  if (!skip(u8())) return err('truncated session id');
  if (!skip(u16())) return err('truncated cipher suites');
  if (!skip(u8())) return err('truncated compression methods');
  if (p === b.length) return { kind: 'done', sni: null }; // no extensions at all (old clients)
  const extLen = u16();
  if (extLen < 0 || p + extLen > b.length) return err('truncated extensions');
  const extEnd = p + extLen;
  while (p + 4 <= extEnd) {
    const type = u16();
    const len = u16();
    if (p + len > extEnd) return err('truncated extension');
    if (type === EXT_SERVER_NAME) return readServerName(b.subarray(p, p + len));
    p += len;
  }
  if (p !== extEnd) return err('trailing bytes in extensions');
  return { kind: 'done', sni: null };
}

function readServerName(b: Uint8Array): HelloResult {
  if (b.length < 2) return err('truncated server_name');
  const listEnd = 2 + ((b[0] << 8) | b[1]);
  if (listEnd > b.length) return err('truncated server_name list');
  let p = 2;
  while (p + 3 <= listEnd) {
    const type = b[p];
    const len = (b[p + 1] << 8) | b[p + 2];
    p += 3;
    if (p + len > listEnd) return err('truncated server name');
    if (type === 0) {
      const name = b.subarray(p, p + len);
      // RFC 6066 §3: an ASCII host name, no trailing dot; anything else is not a name we route by.
      for (const c of name) if (c <= 0x20 || c >= 0x7f) return err('server name is not an ASCII host name');
      return { kind: 'done', sni: Buffer.from(name).toString('latin1').toLowerCase() };
    }
    p += len;
  }
  return { kind: 'done', sni: null };
}
