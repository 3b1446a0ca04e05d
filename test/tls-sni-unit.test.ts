// The ClientHello SNI reader and the PROXY v2 header builder, on bytes.
import { capturedClientHello, makePki } from './helpers/certs.ts';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { MAX_HELLO_RECORDS, parseClientHello, TOO_MANY_RECORDS } from '../src/listen/sni.ts';
import { loadCertificates, sniLookup } from '../src/listen/certs.ts';
import type { Config } from '../src/config/schema.ts';
import { proxyV2Header, PROXY_V2_SIGNATURE } from '../src/listen/proxy-protocol.ts';

const realHello = capturedClientHello;

/** Re-frames a single-record hello into records of at most n bytes of handshake data each. */
function fragment(hello: Buffer, n: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += n) {
    const part = body.subarray(i, i + n);
    const h = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    h.writeUInt16BE(part.length, 3);
    out.push(h, part);
  }
  return Buffer.concat(out);
}

describe('ClientHello SNI', () => {
  it('reads the server name of a real ClientHello, lower-cased', async () => {
    expect(parseClientHello(await realHello('Pass.Test'))).toEqual({ kind: 'done', sni: 'pass.test' });
  });

  it('a hello without SNI is done with no name', async () => {
    const h = await realHello();
    expect(parseClientHello(h)).toEqual({ kind: 'done', sni: null });
  });

  it('asks for more on every strict prefix, and never errs on one', async () => {
    const h = await realHello('a-much-longer-name.example.test');
    for (let i = 0; i < h.length; i++) expect(parseClientHello(h.subarray(0, i)).kind).toBe('more');
    expect(parseClientHello(h)).toEqual({ kind: 'done', sni: 'a-much-longer-name.example.test' });
  });

  it('reassembles a hello split across up to MAX_HELLO_RECORDS TLS records (and their prefixes)', async () => {
    const h = await realHello('split.test');
    const body = h.readUInt16BE(3);
    for (const records of [2, 5, MAX_HELLO_RECORDS]) {
      const f = fragment(h, Math.ceil(body / records));
      expect(parseClientHello(f)).toEqual({ kind: 'done', sni: 'split.test' });
      for (let i = 0; i < f.length; i += 5) expect(parseClientHello(f.subarray(0, i)).kind).toBe('more');
    }
  });

  it('refuses a hello split over more records, as soon as the records past the cap are needed', async () => {
    const h = await realHello('split.test');
    for (const n of [1, 7, Math.ceil(h.readUInt16BE(3) / (MAX_HELLO_RECORDS + 1))]) {
      const f = fragment(h, n);
      expect(parseClientHello(f)).toEqual({ kind: 'error', reason: TOO_MANY_RECORDS });
      // Already when the cap's worth of records is in: no need to wait for the rest.
      expect(parseClientHello(f.subarray(0, MAX_HELLO_RECORDS * (5 + n))).kind).toBe('error');
    }
  });

  it('trailing bytes after the hello do not matter', async () => {
    const h = await realHello('x.test');
    expect(parseClientHello(Buffer.concat([h, Buffer.from('junk')]))).toEqual({ kind: 'done', sni: 'x.test' });
  });

  it('refuses what is not a ClientHello', () => {
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n')).kind).toBe('error');
    expect(parseClientHello(Buffer.from([0x47])).kind).toBe('error');
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0, 0, 0])).kind).toBe('error'); // ServerHello
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])).kind).toBe('error'); // empty record
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff])).kind).toBe('error'); // 16 MB hello
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0])).kind).toBe('error'); // truncated body
  });

  it('never throws on garbage, and a corrupted real hello gives an answer', async () => {
    const h = await realHello('fuzz.test');
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (b) => { expect(['more', 'done', 'error']).toContain(parseClientHello(b).kind); }), { numRuns: 2000 });
    fc.assert(fc.property(fc.nat(h.length - 1), fc.integer({ min: 0, max: 255 }), (i, v) => {
      const c = Buffer.from(h); c[i] = v;
      expect(['more', 'done', 'error']).toContain(parseClientHello(c).kind);
    }), { numRuns: 2000 });
  });
});

describe('PROXY protocol v2 header', () => {
  it('TCP over IPv4: signature, 0x21, 0x11, length 12, addresses, ports', () => {
    const h = proxyV2Header({ address: '192.0.2.1', port: 51000 }, { address: '127.0.0.1', port: 443 });
    expect(h.toString('hex')).toBe(
      '0d0a0d0a000d0a515549540a' + '21' + '11' + '000c' + 'c0000201' + '7f000001' + 'c738' + '01bb');
    expect(h.subarray(0, 12)).toEqual(PROXY_V2_SIGNATURE);
    expect(PROXY_V2_SIGNATURE.toString('latin1')).toBe('\r\n\r\n\0\r\nQUIT\n');
  });

  it('IPv4-mapped IPv6 is written as IPv4', () => {
    const h = proxyV2Header({ address: '::ffff:10.1.2.3', port: 1 }, { address: '::ffff:127.0.0.1', port: 2 });
    expect(h[13]).toBe(0x11);
    expect(h.subarray(16, 20)).toEqual(Buffer.from([10, 1, 2, 3]));
  });

  it('TCP over IPv6: 0x21, length 36', () => {
    const h = proxyV2Header({ address: '2001:db8::1', port: 1234 }, { address: '::1', port: 8443 });
    expect(h.subarray(12, 16).toString('hex')).toBe('2121' + '0024');
    expect(h.subarray(16, 32).toString('hex')).toBe('20010db8000000000000000000000001');
    expect(h.subarray(32, 48).toString('hex')).toBe('00000000000000000000000000000001');
    expect(h.readUInt16BE(48)).toBe(1234);
    expect(h.readUInt16BE(50)).toBe(8443);
    expect(h.length).toBe(52);
  });

  it('mixed families are both written as IPv6', () => {
    const h = proxyV2Header({ address: '192.0.2.1', port: 1 }, { address: '::1', port: 2 });
    expect(h[13]).toBe(0x21);
    expect(h.subarray(16, 32).toString('hex')).toBe('00000000000000000000ffffc0000201');
  });

  it('an unknown address gives LOCAL', () => {
    expect(proxyV2Header({ address: '', port: 0 }, { address: '127.0.0.1', port: 1 }).subarray(12).toString('hex')).toBe('20000000');
  });
});

describe('the certificate chosen by SNI (sniLookup)', () => {
  const ctx = (name: string) => ({ name }) as unknown as tls.SecureContext;
  const certs = new Map([['a.test', ctx('a')], ['b.test', ctx('b')], ['*.w.test', ctx('w')]]);
  const pick = (name: string) => (sniLookup(() => certs, name) as unknown as { name: string }).name;

  it('a fully qualified name (trailing dot) gets its own certificate, as without the dot', () => {
    expect(pick('b.test')).toBe('b');
    expect(pick('b.test.')).toBe('b');
    expect(pick('B.Test.')).toBe('b');
    expect(pick('x.w.test.')).toBe('w');
  });

  it('a wildcard covers one label below its domain, not the domain itself nor a bare name', () => {
    expect(pick('x.w.test')).toBe('w');
    expect(pick('w.test')).toBe('a'); // the first certificate, as any unknown name gets
    const tld = new Map([['a.test', ctx('a')], ['*.test', ctx('t')]]);
    const pickTld = (name: string) => (sniLookup(() => tld, name) as unknown as { name: string }).name;
    expect(pickTld('x.test')).toBe('t');
    expect(pickTld('test')).toBe('a');
  });
});

describe('the certificates of the config (loadCertificates)', () => {
  it('a name written fully qualified or in capitals in tls.certs[].domains is found as SNI names are looked up', () => {
    // Until 2026-11-29 the names were kept as written but for case: "a.test." never matched (lookups drop the dot).
    const pki = makePki();
    const a = pki.leaf('a.test'), b = pki.leaf('b.test');
    const certs = loadCertificates({ tls: { certs: [{ ...b, domains: ['b.test'] }, { ...a, domains: ['A.Test.'] }] } } as unknown as Config);
    expect([...certs.keys()].sort()).toEqual(['a.test', 'b.test']);
    expect(sniLookup(() => certs, 'a.test')).toBe(certs.get('a.test'));
    expect(sniLookup(() => certs, 'a.test')).not.toBe(certs.get('b.test'));
  });
});
