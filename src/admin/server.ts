// The admin listener: a small router with bearer-token auth and JSON helpers.
// Feature modules register their routes (admin/routes-*.ts); this file knows
// none of them.
import http from 'node:http';
import type net from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { crossSiteRefusal } from './guard.ts';

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) { super(message); this.status = status; }
}

export interface AdminRequest {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  url: URL;
  params: Record<string, string>;
  /** The body parsed as JSON; 400 when it is not valid JSON. */
  json(): Promise<unknown>;
}

export type AdminHandler = (r: AdminRequest) => unknown | Promise<unknown>;

interface Route { method: string; parts: string[]; handler: AdminHandler; auth: boolean }

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** Content types of the static files the admin listener serves (dashboard assets). */
export const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/** Sends a static body with the content type of its file extension. */
export function sendStatic(res: http.ServerResponse, ext: string, body: Buffer | string, cacheControl = 'no-cache'): void {
  res.writeHead(200, {
    'content-type': CONTENT_TYPES[ext] ?? 'application/octet-stream',
    'content-length': Buffer.byteLength(body),
    'cache-control': cacheControl,
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}

/**
 * Matches "/api/blacklist/:ip" against a path; decodes parameters (%2F for CIDR). A parameter that is not valid
 * percent-encoding ("10.0.0.0%2", an unencoded "fe80::1%eth0") still matches, named in `malformed`: the route exists
 * and the value is what is wrong, a 400 saying so rather than a 404 "not found". Pure.
 */
export function matchPath(parts: string[], path: string): { params: Record<string, string>; malformed: string | null } | null {
  const segs = path.split('/').filter(Boolean);
  if (segs.length !== parts.length) return null;
  const params: Record<string, string> = {};
  let malformed: string | null = null;
  for (let i = 0; i < parts.length; i++) {
    if (parts[i].startsWith(':')) {
      const name = parts[i].slice(1);
      try { params[name] = decodeURIComponent(segs[i]); } catch {
        malformed ??= `${name}: "${segs[i]}" is not valid percent-encoding (a CIDR's "/" is written %2F, "%" itself %25)`;
      }
    } else if (parts[i] !== segs[i]) return null;
  }
  return { params, malformed };
}

const MAX_BODY = 1024 * 1024;
// Past the limit the rest of the body is still read and dropped, so that the
// client has finished sending when the 413 comes: closing a socket with
// unread bytes makes the kernel send a reset, which loses the answer. The
// drain is bounded; past these, the connection is cut.
const DRAIN_BYTES = 64 * 1024 * 1024;
const DRAIN_MS = 10_000;

/** Reads and drops the rest of a refused body, within the drain's bounds (past them the connection is cut). */
function drain(req: http.IncomingMessage): void {
  let size = 0;
  const timer = setTimeout(() => req.destroy(), DRAIN_MS);
  req.on('data', (c: Buffer) => { size += c.length; if (size > DRAIN_BYTES) { clearTimeout(timer); req.destroy(); } });
  req.on('end', () => clearTimeout(timer));
  req.on('close', () => clearTimeout(timer));
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    let size = 0;
    const chunks: Buffer[] = [];
    const tooLarge = () => new HttpError(413, `body too large: at most ${MAX_BODY} bytes`);
    // Known too large from the head: answered at once (a client waiting for it, or reading while it sends, gets it
    // before sending the rest; before, a declared size past the drain's bound was cut with no answer at all).
    if (declared > MAX_BODY) { drain(req); reject(tooLarge()); return; }
    let timer: NodeJS.Timeout | undefined;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) { chunks.push(c); return; }
      if (size > MAX_BODY + DRAIN_BYTES) { clearTimeout(timer); reject(tooLarge()); req.destroy(); return; }
      if (!timer) {
        chunks.length = 0;
        timer = setTimeout(() => { reject(tooLarge()); req.destroy(); }, DRAIN_MS);
      }
    });
    req.on('end', () => {
      clearTimeout(timer);
      if (size > MAX_BODY) reject(tooLarge());
      else resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

/** The Allow header of a path from the methods of its routes: HEAD wherever GET is (RFC 9110 §10.2.1). Pure. */
export function allowHeader(methods: string[]): string {
  const set = [...new Set(methods)];
  if (set.includes('GET')) set.push('HEAD');
  return set.join(', ');
}

function sendError(res: http.ServerResponse, e: unknown): void {
  if (res.headersSent) { res.destroy(); return; }
  if (e instanceof HttpError) sendJson(res, e.status, { error: e.message });
  else sendJson(res, 500, { error: (e as Error).message });
}

export class AdminServer {
  private routes: Route[] = [];
  private server: http.Server | null = null;
  /** admin.host, as given to listen(): a name the Host header may carry without a token. */
  private host = '';
  token = '';

  route(method: string, pattern: string, handler: AdminHandler, opts: { auth?: boolean } = {}): void {
    this.routes.push({ method, parts: pattern.split('/').filter(Boolean), handler, auth: opts.auth ?? true });
  }

  private authorized(req: http.IncomingMessage): boolean {
    if (!this.token) return true;
    // The scheme is case-insensitive and followed by one or more spaces (RFC 9110 §11.1, §11.4); the token is exact.
    const m = /^bearer +(.*)$/i.exec(req.headers.authorization ?? '');
    // Digests of both, compared in full: comparing lengths first answered a wrong length sooner than a wrong token
    // of the right length, which tells an attacker the token's length. The digests are always 32 bytes.
    const digest = (s: string) => createHash('sha256').update(s).digest();
    return timingSafeEqual(digest(m ? m[1] : ''), digest(this.token));
  }

  readonly handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const refused = crossSiteRefusal(req.headers, { token: this.token !== '', adminHost: this.host });
    if (refused) return sendJson(res, 403, { error: refused });
    let url: URL;
    try { url = new URL(req.url ?? '/', 'http://admin'); } catch { return sendJson(res, 400, { error: 'malformed URL' }); }
    // HEAD is GET without the body (node:http leaves the body out of an answer to HEAD by itself).
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const allowed: string[] = [];
    for (const r of this.routes) {
      const m = matchPath(r.parts, url.pathname);
      if (!m) continue;
      allowed.push(r.method);
      if (r.method !== method) continue;
      if (r.auth && !this.authorized(req)) {
        res.setHeader('www-authenticate', 'Bearer');
        return sendJson(res, 401, { error: 'missing or wrong bearer token' });
      }
      if (m.malformed) return sendJson(res, 400, { error: m.malformed });
      const params = m.params;
      // The body is read before the handler runs, so that a request refused for its body changes nothing, whichever route it hits.
      let text: string;
      try { text = await readBody(req); } catch (e) { return sendError(res, e); }
      let parsed: unknown;
      const ar: AdminRequest = {
        req, res, url, params,
        json: async () => {
          if (parsed === undefined) {
            try { parsed = JSON.parse(text || 'null'); } catch { throw new HttpError(400, 'body is not valid JSON'); }
          }
          return parsed;
        },
      };
      try {
        const out = await r.handler(ar);
        if (!res.headersSent && out !== undefined) sendJson(res, 200, out);
      } catch (e) {
        sendError(res, e);
      }
      return;
    }
    if (!allowed.length) return sendJson(res, 404, { error: 'not found' });
    const allow = allowHeader(allowed);
    res.setHeader('allow', allow);
    sendJson(res, 405, { error: `method ${req.method} not allowed on ${url.pathname}: ${allow}` });
  };

  listen(host: string, port: number): Promise<void> {
    this.host = host;
    this.server = http.createServer((req, res) => void this.handle(req, res));
    return new Promise((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
    });
  }

  address(): net.AddressInfo | null { return (this.server?.address() as net.AddressInfo) ?? null; }

  close(): Promise<void> {
    const s = this.server;
    if (!s) return Promise.resolve();
    s.closeAllConnections();
    return new Promise((r) => s.close(() => r()));
  }
}
