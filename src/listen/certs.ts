// The certificates of the TLS listeners: loaded from the config (and again on
// reload), chosen by SNI, with a default for a ClientHello that names no host.
import tls from 'node:tls';
import type { Config } from '../config/schema.ts';
import { configFile } from '../config/files.ts';

/** Loads the certificates of the config into SNI contexts; throws with the file name when one is unreadable. */
export function loadCertificates(config: Config): Map<string, tls.SecureContext> {
  const map = new Map<string, tls.SecureContext>();
  for (const c of config.tls.certs) {
    const ctx = tls.createSecureContext({ cert: configFile(c.cert), key: configFile(c.key) });
    // Looked up as SNI names are (lower case, no trailing dot): a name written "a.test." would otherwise never match.
    for (const d of c.domains) map.set(d.toLowerCase().replace(/\.$/, ''), ctx);
  }
  return map;
}

/**
 * The certificate for a ClientHello without SNI (a client that connects by IP address, some health checkers and
 * load tools): the first configured one, as an unknown name gets. Without it Node fails such handshakes, since the
 * SNI callback is only asked when there is a name.
 */
export function defaultCertificate(config: Config): { cert: Buffer; key: Buffer } | Record<string, never> {
  const c = config.tls.certs[0];
  return c ? { cert: configFile(c.cert), key: configFile(c.key) } : {};
}

/** Every certificate file of a config, read (what a reload does before it changes anything; throws as the above). */
export function certFiles(config: Config): { certs: Map<string, tls.SecureContext>; fallback: ReturnType<typeof defaultCertificate> } {
  return { certs: loadCertificates(config), fallback: defaultCertificate(config) };
}

/** The certificate for an SNI name: its own, else the wildcard one label up, else the default. A fully qualified name
 *  (`b.test.`, trailing dot) is the same host, as the passthrough routing takes it; a bare name (no dot) is covered by
 *  no wildcard. */
export function sniLookup(certs: () => Map<string, tls.SecureContext>, name: string): tls.SecureContext | undefined {
  const m = certs();
  const n = name.toLowerCase().replace(/\.$/, '');
  const dot = n.indexOf('.');
  return m.get(n) ?? (dot > 0 ? m.get('*.' + n.slice(dot + 1)) : undefined) ?? m.values().next().value;
}

/** The TLS session id context of every listener. Node's default is a hash of the process's command line, and a
 *  session resumes only where it matches: every Scrubber process (another --config path, a worker) shares this one,
 *  or the shared session ticket key (ticket-keys.ts) would resume nothing across them. */
export const SESSION_ID_CONTEXT = 'scrubber';
