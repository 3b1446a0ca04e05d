// What a browser on another site can make the admin listener do: nothing.
// A page elsewhere can send requests here (a form, a fetch with no-cors) and,
// with no token, they would act (CSRF); or it can rebind its own name to
// 127.0.0.1 and then read the answers as its own origin (DNS rebinding).
// Browsers say where a request comes from (Origin) and which name it was sent
// to (Host): both are checked before any route. Pure.
import net from 'node:net';

/** The name in a Host header, without its port or IPv6 brackets, lower case ("[::1]:9090" → "::1"). */
export function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') > 0 ? h.indexOf(']') : undefined);
  const colon = h.lastIndexOf(':');
  return colon >= 0 && h.indexOf(':') === colon ? h.slice(0, colon) : h;
}

/** The origin of http://<host>, or null when the Host header is not a host[:port]. */
function ownOrigin(host: string): string | null {
  try { return new URL(`http://${host}`).origin; } catch { return null; }
}

/**
 * Why a request must be refused (403) before any route, or null. `token`: whether admin.token is set;
 * `adminHost`: admin.host as configured (a name an operator may type in the address bar).
 */
export function crossSiteRefusal(headers: { origin?: string; host?: string }, opts: { token: boolean; adminHost: string }): string | null {
  const { origin, host } = headers;
  // With a token the Origin says nothing more: a page elsewhere cannot send the Authorization header without a CORS
  // preflight, which this listener never grants; and behind a TLS-terminating proxy the browser's Origin
  // (https://<public name>) never matches the Host that reaches here.
  if (origin !== undefined && !opts.token) {
    // An Origin the browser serialised ("http://h:p", or "null") against the name the request was sent to.
    let given: string | null = null;
    try { given = new URL(origin).origin; } catch { /* "null" or malformed: not ours */ }
    const own = host === undefined ? null : ownOrigin(host);
    if (given === null || given === 'null' || given !== own) {
      return `Origin ${origin} is not this admin listener (${own ?? 'no Host'}): requests from another site are refused`;
    }
  }
  // Likewise the rebinding page has no token to send; without one, only names that cannot be rebound are answered
  // (a request without Host is no browser's).
  if (!opts.token && host !== undefined) {
    const name = hostName(host);
    const ok = net.isIP(name) !== 0 || name === 'localhost' || name === opts.adminHost.toLowerCase();
    if (!ok) return `Host ${name} is not an IP address, localhost or admin.host (${opts.adminHost}): without admin.token only those are answered (DNS rebinding)`;
  }
  return null;
}
