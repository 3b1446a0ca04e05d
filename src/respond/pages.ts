// Pages the proxy itself generates. Every one carries `X-Scrubber: <reason>`
// so users and tests can tell it from the application's own responses.
// Files are read per response (they are rare and the OS caches them), so a
// page dropped into the folder is served from the next request on.
import fs from 'node:fs/promises';
import path from 'node:path';

export type { ProxyReason as PageReason } from '../observe/observation.ts';

const TITLES: Record<number, string> = {
  400: 'Bad Request', 405: 'Method Not Allowed', 408: 'Request Timeout', 413: 'Payload Too Large', 421: 'Misdirected Request',
  431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** What a named page says beyond its status (the link "" is the page's own URL: the request again). */
const TEXTS: Record<string, string> = {
  'cookies-needed': 'This site is protected against an attack right now and lets visitors through with a cookie. Your browser ' +
    'did not keep it: allow cookies for this site, then <a href="">try again</a>.',
};

/** The built-in page, used when no file exists for the status (or the named page). */
export function builtinPage(brand: string, status: number, reason: string, name?: string): string {
  const title = `HTTP ${esc(brand)} ${status}`;
  const text = (name !== undefined && TEXTS[name]) || `${esc(TITLES[status] ?? 'Error')} (${esc(reason)})`;
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${title}</title>` +
    `<style>body{font:16px system-ui,sans-serif;margin:4em auto;max-width:36em;color:#222}h1{font-size:2em}</style></head>` +
    `<body><h1>${title}</h1><p>${text}</p></body></html>\n`;
}

/** Fills {{brand}}, {{status}}, {{reason}} in a page file. */
export const fillTemplate = (html: string, brand: string, status: number, reason: string) =>
  html.replaceAll('{{brand}}', esc(brand)).replaceAll('{{status}}', String(status)).replaceAll('{{reason}}', esc(reason));

/** Which files may hold the page, most specific first. Pure. Domain names never contain path separators (validated). */
export function pageFiles(dir: string, domain: string | null, name: string): string[] {
  const files = domain ? [path.join(dir, domain, `${name}.html`)] : [];
  files.push(path.join(dir, `${name}.html`));
  return files;
}

export class Pages {
  private dir: string;
  private brand: string;
  constructor(dir: string, brand: string) { this.dir = dir; this.brand = brand; }

  configure(dir: string, brand: string): void { this.dir = dir; this.brand = brand; }

  async render(status: number, reason: string, domain: string | null, name = String(status)): Promise<string> {
    for (const f of pageFiles(this.dir, domain, name)) {
      try { return fillTemplate(await fs.readFile(f, 'utf8'), this.brand, status, reason); } catch { /* next */ }
    }
    return builtinPage(this.brand, status, reason, name);
  }

  /** The built-in page with the configured brand. */
  builtin(status: number, reason: string): string { return builtinPage(this.brand, status, reason); }
}
