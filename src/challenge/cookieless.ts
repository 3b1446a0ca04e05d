// Telling a client that keeps no cookie from one that has not read its
// redirect yet, so that the first is told "cookies are needed" (a page) rather
// than looped on 302s until its browser gives up with an error of its own.
//
// A browser follows a redirect at once, on the connection it came on, so the
// sign is the same URL coming back on that connection still without the cookie.
// Not the second time: a browser sends the same navigation twice before it has
// read the first answer often enough (a double click, two tabs, a reload; on
// HTTP/2 all on one connection). A browser that keeps cookies makes at most two
// such requests before it comes back with the cookie; one that keeps none
// comes back for ever (twenty hops in Chrome and Firefox). So the third in a row,
// within a few seconds, for the same domain, URL and User-Agent.
//
// Never for a request that says it came through another proxy (Via, Forwarded,
// X-Forwarded-For): a forward proxy (a school's Squid, a company's gateway)
// carries many people on one pooled connection, and two of them may well ask
// for the same home page with the same browser.
//
// Pure: the mark lives on the connection (listen/connections.ts), time is passed in.
import type { IncomingHttpHeaders } from 'node:http';

/** The last challenge answered on a connection: what it was for, how many in a row, when. */
export interface ChallengeMark { key: string; count: number; at: number }

/** The challenge in a row, for the same thing on one connection, that gets the page instead of the redirect. */
export const COOKIELESS_AFTER = 3;
/** A redirect is followed within a round trip; a repeat later than this starts a new row. */
const ROW_MS = 10_000;

/** The mark to keep on the connection after a challenge of `url` (with headers `h`), and whether this one gets the page. */
export function nextMark(mark: ChallengeMark | null, url: string, h: IncomingHttpHeaders, domain: string, now: number): { mark: ChallengeMark | null; cookieless: boolean } {
  if (h.via !== undefined || h.forwarded !== undefined || h['x-forwarded-for'] !== undefined) return { mark: null, cookieless: false };
  const key = `${domain} ${url} ${h['user-agent'] ?? ''}`;
  const count = mark !== null && mark.key === key && now - mark.at <= ROW_MS ? mark.count + 1 : 1;
  // The page ends the row: its "try again" gets the redirect, which a browser that does keep cookies follows through.
  if (count >= COOKIELESS_AFTER) return { mark: null, cookieless: true };
  return { mark: { key, count, at: now }, cookieless: false };
}
