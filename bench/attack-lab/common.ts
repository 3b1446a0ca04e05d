// What the lab's processes share: address plan, time buckets, message shapes.

/** Legitimate users live in 127.1.0.0/16; attackers in 127.200.0.0 and above (one range per scenario). */
export const LEGIT_OCTET = 1;
export const ATTACK_MIN_OCTET = 200;
export const SITE_HOST = 'shop.example';

export function legitAddress(i: number): string { return `127.${LEGIT_OCTET}.${(i + 1) >> 8}.${(i + 1) & 255}`; }
/** Where the legitimate groups live in 127.1.0.0/16: browser users from 0, the flash crowd from CROWD_BASE, API clients from API_BASE; the NAT is one address. */
export const CROWD_BASE = 1000;
export const API_BASE = 3000;
export const NAT_ADDRESS = `127.${LEGIT_OCTET}.250.1`;
/** Legitimate groups, reported apart: browser users on their own addresses, people behind one NAT, cookie-less API clients, the flash crowd. */
export type LegitGroup = 'browser' | 'nat' | 'api' | 'crowd';
/** What the lab's mobile app and partner scripts send (no cookie jar, no redirects followed). */
export const API_USER_AGENTS = ['MyShopApp/4.1.2 (iPhone; iOS 17.4; Scale/3.00)', 'okhttp/4.12.0', 'python-requests/2.31.0', 'MyShopApp/4.1.0 (Android 14; Pixel 8)'] as const;
/** i-th address of an attacker range starting at second octet `octet` (skips .0 and .255 for readability). */
export function attackAddress(octet: number, i: number): string {
  const per = 254 * 256;
  const o2 = octet + Math.floor(i / per);
  const r = i % per;
  return `127.${o2}.${Math.floor(r / 254)}.${(r % 254) + 1}`;
}
export type SourceClass = 'legit' | 'attack' | 'other';
export function classify(addr: string): SourceClass {
  const a = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  if (!a.startsWith('127.')) return 'other';
  const o = Number(a.split('.')[1]);
  return o === LEGIT_OCTET ? 'legit' : o >= ATTACK_MIN_OCTET ? 'attack' : 'other';
}

/** Seconds since T0 (the run's shared epoch, in Date.now() ms). */
export const bucketOf = (t0: number, now = Date.now()) => Math.floor((now - t0) / 1000);

export interface OriginSecond {
  arrivals: { legit: number; attack: number; other: number };
  served: { legit: number; attack: number; other: number };
  rejected: { legit: number; attack: number; other: number };
  maxQueue: number;
  maxConnections: number;
}
export interface OriginReport { seconds: OriginSecond[]; perSource: { legit: number; attack: number; attackSourcesSeen: number; legitSourcesSeen: number } }

export interface LegitSecond { total: number; ok: number; fail: number; lat: number[]; failReasons: Record<string, number>; groups?: Partial<Record<LegitGroup, { total: number; ok: number }>> }
export interface LegitReport {
  seconds: LegitSecond[]; users: number; blockedSources: string[]; requests: number;
  /** Users per group, and browser-like users that got the proxy's cookie challenge once / more than once. */
  groupUsers?: Partial<Record<LegitGroup, number>>; challengedOnce?: number; challengedMore?: number;
}

export interface AttackSecond { sent: number; ok: number; limited: number; errors: number; other: number; open: number }
export interface AttackReport { seconds: AttackSecond[]; sources: number; blockedSources: string[]; note: string }

export const emptyLegitSecond = (): LegitSecond => ({ total: 0, ok: 0, fail: 0, lat: [], failReasons: {} });
export const emptyAttackSecond = (): AttackSecond => ({ sent: 0, ok: 0, limited: 0, errors: 0, other: 0, open: 0 });

export function at<T>(arr: T[], i: number, make: () => T): T {
  while (arr.length <= i) arr.push(make());
  return arr[i];
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const rand = (n: number) => Math.floor(Math.random() * n);
export const pick = <T>(a: readonly T[]): T => a[rand(a.length)];

export const USER_AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15',
  'Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.81',
  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36',
] as const;

export const PAGES = ['/', '/about', '/cart', ...Array.from({ length: 40 }, (_, i) => `/products/${i + 1}`)];

/** The lab origin's capacity (origin.ts). */
export const ORIGIN_CAPACITY = {
  slots: 8,
  queue: 128,
  maxWaitMs: 2000,
  maxConnections: 1000,
  costMs: { page: 8, asset: 1, search: 120, loginGet: 5, loginPost: 40, notFound: 4, api: 6, apiSearch: 120, apiCart: 40 },
  /** Service time grows with the slots busy (a database shared by the workers): cost × (1 + contention × (busy − 1) / slots).
   *  With the queue in front, latency grows with load before the origin is full and far more after. */
  contention: 0.5,
};

/** What the site owner tells the proxy the origin can take at once: Scrubber's domains[].maxInflight and
 *  HAProxy's server maxconn (each then queues the rest in front). Four times the worker slots. */
export const ORIGIN_MAXCONN = ORIGIN_CAPACITY.slots * 4;
