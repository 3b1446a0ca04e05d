// The dashboard as a person uses it, in real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core): it asks for the token, shows
// the traffic this test sent in its graphs, checks an address against the
// blacklist, probes upstreams, fits a phone screen, and leaves screenshots in
// test/screenshots/ (git-ignored) for a person to look at.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startOrigin, startProxy, request, domain, freePort, tempDir, type Origin, type Proxy } from './helpers/servers.ts';
import { openStore } from '../src/store/db.ts';
import { StatsStore } from '../src/stats/store.ts';
import { newCounters, newGlobal, F, G, bucketOf, BUCKET_SECONDS } from '../src/stats/buckets.ts';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
const SHOTS = path.join(import.meta.dirname, 'screenshots');
const TOKEN = 'dash-token';
const SENT = 8;
const LISTED_IP = '203.0.113.7';

/** Six hours of earlier traffic, written through the stats store itself, so that the graphs have a shape (and an attack to shade). */
function seedHistory(stateDir: string): { requests: number } {
  const db = openStore(stateDir);
  const store = new StatsStore(db);
  const now = bucketOf(Date.now());
  let requests = 0;
  const domains = [];
  const globals = [];
  for (let i = 120; i >= 3; i--) {
    const t = now - i * BUCKET_SECONDS;
    const attack = i >= 60 && i < 75;
    const c = newCounters();
    const legit = Math.round(300 + 120 * Math.sin(i / 9));
    const bad = attack ? 4000 + 900 * Math.sin(i) : 20;
    c[F.reqIn] = legit + bad; c[F.reqPassed] = legit + 8; c[F.reqDropped] = bad - 8;
    c[F.inBytesIn] = (legit + bad) * 600; c[F.inBytesOut] = legit * 25_000;
    c[F.passedBytesIn] = legit * 600; c[F.passedBytesOut] = legit * 25_000;
    c[F.droppedBytesIn] = (bad - 8) * 600;
    c[F.status1xx + 1] = legit;
    c[F.err5xx] = attack ? 12 : i % 17 === 0 ? 2 : 0;
    c[F.errTimeout] = attack ? 3 : 0;
    c[F.attackSeconds] = attack ? 180 : 0;
    requests += c[F.reqIn];
    domains.push({ domain: 'a.test', t, c });
    const g = newGlobal();
    g[G.blacklistSize] = attack ? 800 + (75 - i) * 30 : i < 60 ? Math.max(0, 40 - (60 - i)) : 5;
    globals.push({ t, g });
  }
  store.write(domains, globals);
  db.close();
  return { requests };
}

describe.skipIf(!hasChromium)(hasChromium ? 'dashboard in headless Chromium' : `dashboard: SKIPPED, ${CHROMIUM} is absent (apt-get install chromium)`, () => {
  let origin: Origin, proxy: Proxy, ctx: BrowserContext, page: Page, seeded: number, refused: string;
  const api = (p: string, init: { method?: string; body?: string } = {}) =>
    request(proxy.adminUrl + p, { method: init.method, body: init.body, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } });

  beforeAll(async () => {
    origin = await startOrigin();
    refused = `127.0.0.1:${await freePort()}`;
    const stateDir = tempDir();
    seeded = seedHistory(stateDir).requests;
    proxy = await startProxy({
      state: { dir: stateDir },
      admin: { host: '127.0.0.1', port: 0, token: TOKEN },
      domains: [domain('a.test', [origin.address, refused]), domain('b.test', [origin.address])],
    });
    for (let i = 0; i < SENT; i++) await request(proxy.url + `/page/${i}`, { headers: { host: 'a.test' } });
    const put = await api(`/api/blacklist/${LISTED_IP}`, { method: 'PUT', body: JSON.stringify({ ttlSeconds: 3600, reason: 'manual: dashboard test' }) });
    expect(put.status).toBe(200);
    const userDataDir = tempDir('scrubber-chromium-');
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
      viewport: { width: 1360, height: 900 },
    });
    page = ctx.pages()[0] ?? await ctx.newPage();
  }, 60000);

  afterAll(async () => { await ctx?.close(); await proxy?.close(); await origin?.close(); });

  it('asks for the token, then keeps it and loads', async () => {
    await page.goto(proxy.adminUrl + '/');
    await expect.poll(() => page.isVisible('#auth')).toBe(true);
    await page.fill('#token', TOKEN);
    await page.click('#auth-form button[type=submit]');
    await page.waitForSelector('body[data-loaded]', { timeout: 15000 });
    expect(await page.evaluate(() => localStorage.getItem('scrubber.token'))).toBe(TOKEN);
    expect(await page.isVisible('#error')).toBe(false);
  });

  it('shows the traffic this test sent in the cards and the graphs', async () => {
    await page.reload();
    await page.waitForSelector('body[data-loaded]', { timeout: 15000 });
    expect(await page.inputValue('#domain')).toBe('a.test');
    // The attack badge says what attack mode compares against (from /api/domains).
    expect(await page.textContent('#attack-badge')).toBe('normal');
    expect(await page.getAttribute('#attack-badge', 'title')).toMatch(/^(Normal traffic: [\d.]+ req\/s, \d+ ms \(learned over \d+ s\)|Still learning the normal traffic)$/);
    expect(await page.getAttribute('#card-incoming', 'data-value')).toBe(String(seeded + SENT));
    const totals = JSON.parse((await page.getAttribute('#chart-requests', 'data-totals'))!);
    expect(totals.incoming).toBe(seeded + SENT);
    expect(totals.incoming).toBeGreaterThan(totals.passed);
    expect(totals.dropped).toBeGreaterThan(0);
    // One canvas per graph, drawn at the width of its panel.
    for (const id of ['chart-requests', 'chart-traffic', 'chart-errors', 'chart-blacklist']) {
      const w = await page.$eval(`#${id} canvas`, (c) => (c as HTMLCanvasElement).getBoundingClientRect().width);
      expect(w, id).toBeGreaterThan(300);
    }
    expect([480, 481]).toContain(Number(await page.getAttribute('#chart-requests', 'data-points'))); // 24 h of 3-minute buckets (481 when not aligned)
    // The other domain has nothing yet: its graphs say so.
    await page.selectOption('#domain', 'b.test');
    await expect.poll(async () => JSON.parse((await page.getAttribute('#chart-requests', 'data-totals'))!).incoming).toBe(0);
    await page.selectOption('#domain', 'a.test');
    await expect.poll(async () => JSON.parse((await page.getAttribute('#chart-requests', 'data-totals'))!).incoming).toBe(seeded + SENT);
    // Switching domain while the previous domain's figures are still on their way: the page
    // must end on the domain the selector shows. The b.test answer is held until a.test is chosen.
    let held!: () => void;
    const heldUntil = new Promise<void>((r) => { held = r; });
    let sawB!: () => void;
    const bAsked = new Promise<void>((r) => { sawB = r; });
    await page.route(/\/api\/stats\?domain=b\.test/, async (route) => { sawB(); await heldUntil; await route.continue(); });
    await page.selectOption('#domain', 'b.test');
    await bAsked;
    await page.selectOption('#domain', 'a.test');
    held();
    await page.waitForTimeout(500);
    await page.unroute(/\/api\/stats\?domain=b\.test/);
    expect(await page.inputValue('#domain')).toBe('a.test');
    await expect.poll(async () => JSON.parse((await page.getAttribute('#chart-requests', 'data-totals'))!).incoming, { timeout: 2000 }).toBe(seeded + SENT);
  });

  it('probes the upstreams: one reachable, one refused', async () => {
    await page.click('#probe');
    await expect.poll(() => page.textContent(`#upstream-rows tr[data-address="${refused}"]`)).toContain('ECONNREFUSED');
    const up = await page.textContent(`#upstream-rows tr[data-address="${origin.address}"]`);
    expect(up).toContain('200');
    expect(up).toMatch(/\d+ ms/);
  });

  it('checks an address against the blacklist', async () => {
    await page.fill('#check-ip', LISTED_IP);
    await page.click('#check-form button');
    await page.waitForSelector('#check-result[data-listed]');
    expect(await page.getAttribute('#check-result', 'data-listed')).toBe('true');
    expect(await page.textContent('#check-result [data-k=reason]')).toContain('manual: dashboard test');
    expect(await page.textContent('#check-result [data-k=until]')).not.toBe('—');
    expect(await page.textContent('#blacklist-rows')).toContain(LISTED_IP);
    await page.fill('#check-ip', '198.51.100.1');
    await page.click('#check-form button');
    await expect.poll(() => page.getAttribute('#check-result', 'data-listed')).toBe('false');
    await page.fill('#check-ip', LISTED_IP); // leave the listed one on screen for the screenshot
    await page.click('#check-form button');
    await expect.poll(() => page.getAttribute('#check-result', 'data-listed')).toBe('true');
  });

  it('saves screenshots, desktop and phone; the phone layout does not scroll sideways', async () => {
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, 'dashboard.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(1);
    const w = await page.$eval('#chart-requests canvas', (c) => (c as HTMLCanvasElement).getBoundingClientRect().width);
    expect(w).toBeLessThanOrEqual(390);
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-phone.png'), fullPage: true });
    expect(fs.statSync(path.join(SHOTS, 'dashboard.png')).size).toBeGreaterThan(20_000);
  });
});
