// The bundled demo origin behind `npm start`: a small site (a page, its
// stylesheet and image, a search and a login form) so a newcomer sees a page
// through the proxy at once.
import http from 'node:http';

const CSS = 'body{font:16px system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#223}h1{color:#1a5fb4}img{width:64px}';
const SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="28" fill="#1a5fb4"/><path d="M20 34l8 8 16-20" stroke="#fff" stroke-width="6" fill="none"/></svg>';

function page(title: string, body: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title><link rel="stylesheet" href="/static/site.css"></head>` +
    `<body><img src="/static/logo.svg" alt=""><h1>${title}</h1>${body}` +
    '<form action="/search"><input name="q" placeholder="Search"><button>Search</button></form></body></html>';
}

export function demoHandler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://demo');
  const send = (status: number, type: string, body: string) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  switch (url.pathname) {
    case '/': return send(200, 'text/html; charset=utf-8', page('Scrubber demo origin', `<p>This page came through Scrubber. Your address as the origin sees it: <code>${String(req.headers['x-forwarded-for'] ?? '').replace(/[<>&]/g, '')}</code></p>`));
    case '/static/site.css': return send(200, 'text/css', CSS);
    case '/static/logo.svg': return send(200, 'image/svg+xml', SVG);
    case '/search': return send(200, 'text/html; charset=utf-8', page('Search', `<p>No results for <b>${(url.searchParams.get('q') ?? '').replace(/[<>&]/g, '')}</b>.</p>`));
    case '/login':
      if (req.method === 'POST') { req.resume(); req.on('end', () => send(303, 'text/plain', '')); return; }
      return send(200, 'text/html; charset=utf-8', page('Log in', '<form method="post"><input name="user"><input name="password" type="password"><button>Log in</button></form>'));
    default: return send(404, 'text/html; charset=utf-8', page('Not found', '<p>No such page.</p>'));
  }
}

export function startDemoOrigin(host: string, port: number): Promise<http.Server> {
  const s = http.createServer(demoHandler);
  return new Promise((resolve, reject) => { s.once('error', reject); s.listen(port, host, () => resolve(s)); });
}
