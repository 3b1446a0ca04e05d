// An HTTP/2 client that writes raw frames on a TLS socket, for the abuses
// Node's http2 client will not send (floods, half header blocks, resets by the
// thousand). It reads the server's frames as they come (so the server's ACKs
// never back up: the floods are the hard case) and notes its GOAWAY.
import tls from 'node:tls';
import net from 'node:net';
import fs from 'node:fs';

export const T = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;

export function frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3); h[3] = type; h[4] = flags; h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}

/** HPACK: :method GET, :scheme https, :path / (static table), :authority <host> (literal, indexed name 1). */
export function getHeaders(host: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x87, 0x84, 0x01, host.length]), Buffer.from(host)]);
}

/** HPACK: one literal header "x-a: aaa…" (255 bytes), never indexed: the padding of a CONTINUATION flood. */
export const FILLER_HEADER = Buffer.concat([Buffer.from([0x10, 3]), Buffer.from('x-a'), Buffer.from([0x7f, 0x80, 0x01]), Buffer.alloc(255, 97)]);

export const RST_CANCEL = Buffer.from([0, 0, 0, 8]);

export class RawH2 {
  readonly socket: tls.TLSSocket;
  goaway: number | null = null;
  closed = false;
  /** Frames received, by type. */
  readonly got = new Map<number, number>();
  private buf: Buffer = Buffer.alloc(0);

  private constructor(socket: tls.TLSSocket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => this.read(d));
    socket.on('close', () => { this.closed = true; });
    socket.on('error', () => {});
  }

  static async connect(o: { port: number; localAddress: string; servername: string; ca: string }): Promise<RawH2> {
    const s = tls.connect({ socket: net.connect({ port: o.port, host: '127.0.0.1', localAddress: o.localAddress }), servername: o.servername, ca: fs.readFileSync(o.ca), ALPNProtocols: ['h2'] });
    await new Promise((resolve, reject) => { s.once('secureConnect', resolve); s.once('error', reject); });
    if (s.alpnProtocol !== 'h2') throw new Error(`ALPN gave ${String(s.alpnProtocol)}`);
    const c = new RawH2(s);
    // The preface, our (empty) SETTINGS, and the ACK of the server's.
    s.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(T.SETTINGS, 0, 0), frame(T.SETTINGS, FLAG.ACK, 0)]));
    return c;
  }

  /** Writes `next(i)` every `gapMs` (i = batches written so far) until the server closes, `max` batches or `ms` pass. */
  async flood(next: (i: number) => Buffer | null, max: number, ms = 3000, gapMs = 2): Promise<number> {
    const t0 = Date.now();
    let i = 0;
    while (i < max && !this.closed && Date.now() - t0 < ms) {
      const b = next(i);
      if (!b) break;
      this.socket.write(b);
      i++;
      await new Promise((r) => setTimeout(r, gapMs));
    }
    await new Promise((r) => setTimeout(r, 300));
    return i;
  }

  destroy(): void { this.socket.destroy(); }

  private read(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const type = this.buf[3];
      this.got.set(type, (this.got.get(type) ?? 0) + 1);
      if (type === T.GOAWAY) this.goaway = this.buf.readUInt32BE(13);
      this.buf = this.buf.subarray(9 + len);
    }
  }
}
