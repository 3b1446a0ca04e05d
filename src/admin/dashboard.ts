// The dashboard: one static page, its script and style, and uPlot from
// node_modules (bundled with the project: the machines have no internet).
// The files carry no data, so they are served without the token; the page's
// script sends the token (kept in localStorage) with every API call.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { sendStatic, type AdminServer } from './server.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** URL path → file on disk. */
export const DASHBOARD_FILES: Record<string, string> = {
  '/': path.join(here, 'dashboard', 'index.html'),
  '/dashboard/app.js': path.join(here, 'dashboard', 'app.js'),
  '/dashboard/app.css': path.join(here, 'dashboard', 'app.css'),
  '/dashboard/uPlot.iife.min.js': require.resolve('uplot/dist/uPlot.iife.min.js'),
  '/dashboard/uPlot.min.css': require.resolve('uplot/dist/uPlot.min.css'),
};

// The page runs only its own scripts and talks only to this listener.
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export function registerDashboard(admin: AdminServer): void {
  const cache = new Map<string, Buffer>();
  for (const [urlPath, file] of Object.entries(DASHBOARD_FILES)) {
    admin.route('GET', urlPath, ({ res }) => {
      let body = cache.get(file);
      if (!body) { body = fs.readFileSync(file); cache.set(file, body); }
      const ext = path.extname(file);
      if (ext === '.html') { res.setHeader('content-security-policy', CSP); res.setHeader('referrer-policy', 'no-referrer'); }
      sendStatic(res, ext, body);
    }, { auth: false });
  }
}
