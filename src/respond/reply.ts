// Every answer the proxy makes itself goes through here: proxy pages, the
// challenge, refusals, maintenance redirects — on an HTTP response, or written
// raw on the socket of an upgrade request (which has no ServerResponse).
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Pages } from './pages.ts';
import type { ProxyReason } from '../observe/observation.ts';

/** An answer made by the proxy, before it is written. */
export interface Answer {
  status: number;
  reason: ProxyReason;
  headers?: Record<string, string | number>;
  /** Body text; for a page, left out and rendered from the pages folder. */
  body?: string;
  /** Render the page of this name (default: the status) for the domain. */
  page?: string | true;
  /** Close the client connection afterwards. */
  close?: boolean;
}

/** A domain in maintenance (SPEC: its redirect, or the maintenance page with Retry-After). Pure. */
export function maintenanceAnswer(m: { redirect: string | null; retryAfterSeconds: number }): Answer {
  if (m.redirect) return { status: 302, reason: 'maintenance', body: '', headers: { location: m.redirect } };
  return { status: 503, reason: 'maintenance', page: 'maintenance', headers: { 'retry-after': String(m.retryAfterSeconds) } };
}

const STATUS_TEXT: Record<number, string> = {
  100: 'Continue', 302: 'Found', 400: 'Bad Request', 405: 'Method Not Allowed', 408: 'Request Timeout', 413: 'Payload Too Large',
  417: 'Expectation Failed', 421: 'Misdirected Request', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large',
  502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

/** A complete HTTP/1.1 response as bytes, for sockets with no ServerResponse (client errors, CONNECT, upgrades). */
export function rawResponse(status: number, reason: string, headers: Record<string, string | number> = {}, body = ''): string {
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ''}\r\nx-scrubber: ${reason}\r\n`;
  for (const k in headers) head += `${k}: ${headers[k]}\r\n`;
  return `${head}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/** Where the flow's answers go: an HTTP response, or the raw socket of an upgrade. */
export interface Reply {
  /** Writes the answer (rendering the page when asked); the promise settles once it is written, with the bytes of its
   *  body that went out (as a forwarded response's are counted; 0 when nothing could be written). */
  send(a: Answer, domain: string | null): Promise<number>;
  /** Sends a built-in page synchronously (malformed requests: the parser may destroy the socket next tick). */
  /** Returns the bytes of its body written. */
  sendBuiltin(status: number, reason: ProxyReason): number;
  destroy(): void;
  readonly destroyed: boolean;
}

export class HttpReply implements Reply {
  readonly res: ServerResponse;
  private readonly pages: Pages;
  constructor(res: ServerResponse, pages: Pages) { this.res = res; this.pages = pages; }

  async send(a: Answer, domain: string | null): Promise<number> {
    const body = a.page !== undefined ? await this.pages.render(a.status, a.reason, domain, a.page === true ? undefined : a.page) : a.body;
    return this.write(a, body ?? '', body !== undefined && a.page !== undefined);
  }

  sendBuiltin(status: number, reason: ProxyReason): number {
    return this.write({ status, reason, close: true }, this.pages.builtin(status, reason), true);
  }

  private write(a: Answer, body: string, html: boolean): number {
    const res = this.res;
    if (res.headersSent || res.destroyed) return 0;
    const headers: Record<string, string | number> = { 'cache-control': 'no-store', 'x-scrubber': a.reason, ...a.headers, 'content-length': Buffer.byteLength(body) };
    if (html) headers['content-type'] = 'text/html; charset=utf-8';
    if (a.close) headers.connection = 'close';
    res.writeHead(a.status, headers);
    const head = res.req?.method === 'HEAD';
    res.end(head ? undefined : body);
    return head ? 0 : Buffer.byteLength(body);
  }

  destroy(): void { this.res.destroy(); }
  get destroyed(): boolean { return this.res.destroyed; }
}

/** How long a connection the proxy answered and closed (end(): the answer, then its FIN) waits for the client to
 *  close its side. A client that ignores the FIN would otherwise hold the socket, and its place under the source's
 *  connection cap, for good (nginx and HAProxy bound their lingering close too). */
export const CLOSE_GRACE_MS = 2000;

/** Sends a raw answer and closes the connection: ended now, destroyed if the client has not closed it within
 *  CLOSE_GRACE_MS (its answer is long delivered by then). */
export function endWith(socket: Duplex, answer: string): void {
  socket.end(answer);
  const t = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  t.unref();
  socket.once('close', () => clearTimeout(t));
}

export class SocketReply implements Reply {
  private readonly socket: Duplex;
  private readonly pages: Pages;
  constructor(socket: Duplex, pages: Pages) { this.socket = socket; this.pages = pages; }

  async send(a: Answer, domain: string | null): Promise<number> {
    const body = a.page !== undefined ? await this.pages.render(a.status, a.reason, domain, a.page === true ? undefined : a.page) : (a.body ?? '');
    const headers = a.page !== undefined ? { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...a.headers } : (a.headers ?? {});
    if (this.socket.destroyed) return 0;
    endWith(this.socket, rawResponse(a.status, a.reason, headers, body));
    return Buffer.byteLength(body);
  }

  sendBuiltin(status: number, reason: ProxyReason): number {
    if (!this.socket.destroyed) endWith(this.socket, rawResponse(status, reason));
    return 0;
  }

  destroy(): void { this.socket.destroy(); }
  get destroyed(): boolean { return this.socket.destroyed; }
}
