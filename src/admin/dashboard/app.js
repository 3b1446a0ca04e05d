// The dashboard's script: reads the admin API and draws it with uPlot.
// Plain browser JavaScript, no build step. The token (when the listener asks
// for one) is kept in localStorage and sent as a bearer header; "#token=..."
// in the address stores it once (a fragment never reaches the server).
'use strict';
(() => {
  const $ = (s) => document.querySelector(s);
  const REFRESH_MS = 10000;
  const COLORS = { incoming: '#4f6bed', passed: '#16a34a', dropped: '#dc2626', challenged: '#d97706', errors: '#9333ea', connect: '#9333ea', timeout: '#0891b2', e5xx: '#e11d48', reset: '#64748b', blacklist: '#111827' };
  const state = { domains: [], domain: localStorage.getItem('scrubber.domain') || '', range: Number(localStorage.getItem('scrubber.range')) || 86400, month: '', charts: {}, probe: null, timer: 0, busy: false, again: false };

  // ---- token and API -------------------------------------------------------
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) { localStorage.setItem('scrubber.token', decodeURIComponent(m[1])); history.replaceState(null, '', location.pathname + location.search); }
  const token = () => localStorage.getItem('scrubber.token') || '';

  class ApiError extends Error { constructor(status, message) { super(message); this.status = status; } }
  async function api(path, opts = {}) {
    const headers = { accept: 'application/json' };
    if (token()) headers.authorization = 'Bearer ' + token();
    const res = await fetch(path, { ...opts, headers, cache: 'no-store' });
    let body = null;
    try { body = await res.json(); } catch { /* not JSON */ }
    if (res.status === 401) { showAuth(); throw new ApiError(401, 'the admin token is missing or wrong'); }
    if (!res.ok) throw new ApiError(res.status, (body && body.error) || res.statusText);
    return body;
  }
  function showAuth() { $('#auth').hidden = false; $('#token').focus(); }
  $('#auth-form').addEventListener('submit', (e) => { e.preventDefault(); localStorage.setItem('scrubber.token', $('#token').value); $('#auth').hidden = true; refresh(); });
  $('#auth-cancel').addEventListener('click', () => { $('#auth').hidden = true; });
  $('#token-button').addEventListener('click', showAuth);

  // ---- formatting ----------------------------------------------------------
  const nf = new Intl.NumberFormat();
  const num = (n) => nf.format(Math.round(n));
  function unit(n, units, base) {
    let i = 0;
    while (Math.abs(n) >= base && i < units.length - 1) { n /= base; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
  }
  const bytes = (n) => unit(n, ['B', 'KB', 'MB', 'GB', 'TB'], 1024);
  const bits = (n) => unit(n, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'], 1000);
  /** Compact axis labels: 950, 2.5k, 12M (three significant digits at most). */
  function short(n) {
    const units = ['', 'k', 'M', 'G', 'T'];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return String(+n.toPrecision(3)) + units[i];
  }
  function toDate(v) {
    if (v === null || v === undefined || v === '') return null;
    if (typeof v === 'number') return new Date(v > 1e11 ? v : v * 1000);
    const d = new Date(v);
    return isNaN(d.getTime()) ? null : d;
  }
  const when = (v) => { const d = toDate(v); return d ? d.toLocaleString() : '—'; };
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) if (k === 'class') e.className = v; else e.setAttribute(k, v);
    for (const k of kids) e.append(k instanceof Node ? k : String(k ?? ''));
    return e;
  };
  function setCard(id, value, sub, raw) {
    const c = $('#' + id);
    c.querySelector('[data-k=requests]').textContent = value;
    c.querySelector('[data-k=bytes]').textContent = sub;
    c.dataset.value = String(raw);
  }
  function showError(msg) { const e = $('#error'); e.textContent = msg || ''; e.hidden = !msg; }

  // ---- charts --------------------------------------------------------------
  // Attack periods are shaded behind the series of every chart.
  const attackShade = () => ({
    hooks: {
      drawClear: [(u) => {
        const periods = u._attacks || [];
        if (!periods.length) return;
        const { ctx, bbox } = u;
        ctx.save();
        ctx.fillStyle = 'rgba(220, 38, 38, 0.12)';
        for (const p of periods) {
          const x0 = Math.max(bbox.left, u.valToPos(p.from, 'x', true));
          const x1 = Math.min(bbox.left + bbox.width, u.valToPos(p.to, 'x', true));
          if (x1 > x0) ctx.fillRect(x0, bbox.top, x1 - x0, bbox.height);
        }
        ctx.restore();
      }],
    },
  });

  const chartHeight = () => (window.innerWidth < 560 ? 180 : 220);

  function makeChart(id, series, yFormat, axisFormat = short) {
    const box = $('#' + id);
    const opts = {
      width: Math.max(280, box.clientWidth), height: chartHeight(),
      plugins: [attackShade()],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [
        { stroke: '#667085', grid: { stroke: '#eef0f4' }, ticks: { stroke: '#e4e7ec' } },
        { stroke: '#667085', grid: { stroke: '#eef0f4' }, ticks: { stroke: '#e4e7ec' }, size: 48, values: (u, vals) => vals.map((v) => axisFormat(v)) },
      ],
      series: [{ label: 'time', value: (u, v) => (v == null ? '—' : new Date(v * 1000).toLocaleString()) },
        ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.6, fill: s.fill ? s.color + '22' : undefined, points: { show: false }, value: (u, v) => (v == null ? '—' : yFormat(v)) }))],
    };
    const u = new uPlot(opts, [[], ...series.map(() => [])], box);
    new ResizeObserver(() => u.setSize({ width: Math.max(280, box.clientWidth), height: chartHeight() })).observe(box);
    return { u, box, keys: series.map((s) => s.key) };
  }

  function setupCharts() {
    state.charts.requests = makeChart('chart-requests', [
      { key: 'incoming', label: 'Incoming', color: COLORS.incoming, fill: true },
      { key: 'passed', label: 'Passed', color: COLORS.passed },
      { key: 'dropped', label: 'Dropped', color: COLORS.dropped },
      { key: 'challenged', label: 'Challenged', color: COLORS.challenged },
    ], short);
    state.charts.traffic = makeChart('chart-traffic', [
      { key: 'incoming', label: 'Incoming', color: COLORS.incoming, fill: true },
      { key: 'passed', label: 'Passed', color: COLORS.passed },
      { key: 'dropped', label: 'Dropped', color: COLORS.dropped },
    ], bits, (v) => short(v));
    state.charts.errors = makeChart('chart-errors', [
      { key: 'connect', label: 'Connect', color: COLORS.connect },
      { key: 'timeout', label: 'Timeout', color: COLORS.timeout },
      { key: '5xx', label: '5xx', color: COLORS.e5xx },
      { key: 'reset', label: 'Reset', color: COLORS.reset },
    ], short);
    state.charts.blacklist = makeChart('chart-blacklist', [
      { key: 'blacklist', label: 'Blacklisted sources', color: COLORS.blacklist, fill: true },
    ], short);
  }

  /** Dense series over the range: a bucket with nothing stored is a zero, not a gap. */
  function series(stats) {
    const step = stats.bucketSeconds;
    const byT = new Map(stats.buckets.map((b) => [b.t, b]));
    const first = stats.from - (stats.from % step);
    const cols = { t: [], req: { incoming: [], passed: [], dropped: [], challenged: [] }, bps: { incoming: [], passed: [], dropped: [] }, err: { connect: [], timeout: [], '5xx': [], reset: [] }, bl: { blacklist: [] } };
    for (let t = first; t < stats.to; t += step) {
      const b = byT.get(t);
      cols.t.push(t);
      const z = (f) => (b ? f(b) : 0);
      cols.req.incoming.push(z((b) => b.incoming.requests));
      cols.req.passed.push(z((b) => b.passed.requests));
      cols.req.dropped.push(z((b) => b.dropped.requests));
      cols.req.challenged.push(z((b) => b.challenged.requests));
      const bps = (x) => ((x.bytesIn + x.bytesOut) * 8) / step;
      cols.bps.incoming.push(z((b) => bps(b.incoming)));
      cols.bps.passed.push(z((b) => bps(b.passed)));
      cols.bps.dropped.push(z((b) => bps(b.dropped)));
      for (const k of ['connect', 'timeout', '5xx', 'reset']) cols.err[k].push(z((b) => b.upstreamErrors[k]));
      cols.bl.blacklist.push(z((b) => b.blacklistSize));
    }
    return cols;
  }

  function draw(chart, t, cols, attacks) {
    chart.u._attacks = attacks;
    chart.u.setData([t, ...chart.keys.map((k) => cols[k])]);
    // What is drawn, for people who read the page's source and for the browser test.
    const totals = {};
    for (const k of chart.keys) totals[k] = cols[k].reduce((a, b) => a + b, 0);
    chart.box.dataset.totals = JSON.stringify(totals);
    chart.box.dataset.points = String(t.length);
  }

  // ---- loading -------------------------------------------------------------
  async function loadDomains() {
    const d = await api('/api/domains');
    state.domains = d.domains;
    const sel = $('#domain');
    const names = d.domains.map((x) => x.name);
    if (!names.includes(state.domain)) state.domain = names[0] || '';
    if (sel.options.length !== names.length || [...sel.options].some((o, i) => o.value !== names[i])) {
      sel.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
    }
    sel.value = state.domain;
    setCard('card-blacklist', num(d.blacklistSize), 'sources · filter ' + d.filterMode, d.blacklistSize);
    return d;
  }

  async function loadStats() {
    if (!state.domain) return;
    const now = Math.floor(Date.now() / 1000);
    const s = await api(`/api/stats?domain=${encodeURIComponent(state.domain)}&from=${now - state.range}&to=${now + 1}`);
    const c = series(s);
    draw(state.charts.requests, c.t, c.req, s.attackPeriods);
    draw(state.charts.traffic, c.t, c.bps, s.attackPeriods);
    draw(state.charts.errors, c.t, c.err, s.attackPeriods);
    draw(state.charts.blacklist, c.t, c.bl, s.attackPeriods);
    const sum = (f) => s.buckets.reduce((a, b) => a + f(b), 0);
    const inc = sum((b) => b.incoming.requests), pas = sum((b) => b.passed.requests), dro = sum((b) => b.dropped.requests);
    const errs = sum((b) => b.upstreamErrors.connect + b.upstreamErrors.timeout + b.upstreamErrors['5xx'] + b.upstreamErrors.reset);
    const pct = (x) => (inc ? ` · ${((100 * x) / inc).toFixed(1)} %` : '');
    setCard('card-incoming', num(inc), bytes(sum((b) => b.incoming.bytesIn + b.incoming.bytesOut)), inc);
    setCard('card-passed', num(pas), bytes(sum((b) => b.passed.bytesIn + b.passed.bytesOut)) + pct(pas), pas);
    setCard('card-dropped', num(dro), bytes(sum((b) => b.dropped.bytesIn + b.dropped.bytesOut)) + pct(dro), dro);
    setCard('card-errors', num(errs), `connect ${num(sum((b) => b.upstreamErrors.connect))} · timeout ${num(sum((b) => b.upstreamErrors.timeout))} · 5xx ${num(sum((b) => b.upstreamErrors['5xx']))}`, errs);
  }

  async function loadBilling() {
    if (!state.domain) return;
    const month = $('#month').value || new Date().toISOString().slice(0, 7);
    const b = await api(`/api/billing?domain=${encodeURIComponent(state.domain)}&month=${month}`);
    $('#bill-figure').textContent = bits(b.billedBps);
    $('#bill-figure').dataset.value = String(b.billedBps);
    $('#bill-note').textContent = b.samplesWithTraffic > b.discarded
      ? `31st highest of ${num(b.samplesWithTraffic)} samples with passed traffic (the 30 highest are discarded), ${b.complete ? 'whole month' : 'month so far'}.`
      : `${num(b.samplesWithTraffic)} samples with passed traffic so far: with 30 or fewer, the 31st highest sample is an idle one, so nothing is billed.`;
    $('#bill-rows').replaceChildren(...b.top.map((s) => el('tr', { class: s.discarded ? 'discarded' : 'billed' },
      el('td', {}, s.rank), el('td', {}, when(s.t)), el('td', {}, bits(s.bps)), el('td', {}, s.discarded ? 'discarded' : 'billed'))));
    if (month === new Date().toISOString().slice(0, 7)) setCard('card-billing', bits(b.billedBps), `${num(b.samplesWithTraffic)} samples · 31st highest`, b.billedBps);
  }

  function renderUpstreams() {
    const d = state.domains.find((x) => x.name === state.domain);
    const probed = state.probe && state.probe.domain === state.domain ? new Map(state.probe.upstreams.map((p) => [p.address + p.role, p])) : new Map();
    $('#upstream-rows').replaceChildren(...(d ? d.upstreams : []).map((u) => {
      const p = probed.get(u.address + u.role);
      return el('tr', { 'data-address': u.address },
        el('td', {}, u.address, u.role === 'backup' ? el('span', { class: 'muted' }, ' backup') : ''),
        el('td', {}, el('span', { class: 'dot ' + (u.healthy ? 'up' : 'down') }), u.healthy ? 'up' : 'down'),
        el('td', { class: p ? (p.reachable ? 'yes' : 'no') : '' }, p ? (p.reachable ? 'yes' : 'no') : '—'),
        el('td', {}, p && p.connectMs != null ? p.connectMs + ' ms' : '—'),
        el('td', {}, p && p.status != null ? p.status : '—'),
        el('td', { class: 'wrap' }, p && p.error ? p.error : '—'));
    }));
    $('#probe-note').textContent = state.probe && state.probe.domain === state.domain
      ? `Probed ${new Date(state.probe.probedAt).toLocaleTimeString()}: GET ${state.probe.path} to each upstream (timeout ${state.probe.timeoutMs} ms).`
      : 'Health from the periodic checks. "Probe now" connects to each upstream and sends one request.';
  }

  async function loadBlacklist() {
    try {
      // Only the newest 200 are shown, so only they are asked for: the whole list of an attack's bans is megabytes.
      const b = await api('/api/blacklist?order=newest&limit=200');
      const entries = (b.entries || []).slice().sort((x, y) => (toDate(y.since) || 0) - (toDate(x.since) || 0));
      const total = typeof b.total === 'number' ? b.total : entries.length;
      $('#blacklist-count').textContent = `${num(total)} ${total === 1 ? 'source' : 'sources'}` + (total > 200 ? ' · newest 200 shown' : '');
      $('#blacklist-rows').replaceChildren(...(entries.length ? entries.slice(0, 200).map((e) => el('tr', {},
        el('td', {}, e.ip), el('td', { class: 'wrap' }, e.reason || '—'), el('td', {}, when(e.since)), el('td', {}, when(e.expiresAt))))
        : [el('tr', {}, el('td', { colspan: '4', class: 'muted' }, 'Nobody is blacklisted.'))]));
    } catch (e) {
      if (e.status === 401) throw e;
      $('#blacklist-count').textContent = '';
      $('#blacklist-rows').replaceChildren(el('tr', {}, el('td', { colspan: '4', class: 'muted' }, 'The blacklist is not available: ' + e.message)));
    }
  }

  async function refresh() {
    // A change (domain, range) made while a refresh is in flight must not be lost:
    // run once more when the current one ends, or the page shows the old domain's figures.
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    state.again = false;
    clearTimeout(state.timer);
    try {
      await loadDomains();
      const d = state.domains.find((x) => x.name === state.domain);
      const badge = $('#attack-badge');
      badge.textContent = d && d.underAttack ? 'under attack' : 'normal';
      badge.className = 'badge ' + (d && d.underAttack ? 'attack' : 'ok');
      // Why attack mode is on, and the normal traffic it compares against.
      const a = d && d.attack;
      badge.title = !a ? '' : (a.under ? a.reason + ' since ' + new Date(a.since).toLocaleTimeString() + '. ' : '')
        + (a.learnedSeconds > 0 ? 'Normal traffic: ' + a.baselineRps + ' req/s, ' + a.baselineLatencyMs + ' ms (learned over ' + a.learnedSeconds + ' s)' : 'Still learning the normal traffic');
      renderUpstreams();
      await Promise.all([loadStats(), loadBilling(), loadBlacklist()]);
      showError('');
      $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      showError(e.status === 401 ? 'Enter the admin token to see the statistics.' : 'Could not load: ' + e.message);
    } finally {
      state.busy = false;
      state.timer = setTimeout(tick, state.again ? 0 : REFRESH_MS);
    }
  }
  // A hidden tab does not poll; it catches up when shown again.
  function tick() { if (document.hidden) state.timer = setTimeout(tick, REFRESH_MS); else refresh(); }
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });

  // ---- controls ------------------------------------------------------------
  $('#domain').addEventListener('change', (e) => { state.domain = e.target.value; localStorage.setItem('scrubber.domain', state.domain); state.probe = null; refresh(); });
  for (const b of document.querySelectorAll('[data-range]')) {
    b.classList.toggle('on', Number(b.dataset.range) === state.range);
    b.addEventListener('click', () => {
      state.range = Number(b.dataset.range);
      localStorage.setItem('scrubber.range', String(state.range));
      for (const x of document.querySelectorAll('[data-range]')) x.classList.toggle('on', x === b);
      refresh();
    });
  }
  $('#month').value = new Date().toISOString().slice(0, 7);
  $('#month').addEventListener('change', () => loadBilling().catch((e) => showError(e.message)));

  $('#check-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const ip = $('#check-ip').value.trim();
    const out = $('#check-result');
    out.className = 'result';
    out.textContent = 'checking…';
    try {
      const r = await api('/api/blacklist/' + encodeURIComponent(ip));
      out.className = 'result ' + (r.listed ? 'listed' : 'clear');
      out.dataset.listed = String(!!r.listed);
      out.replaceChildren(el('div', { class: 'verdict' }, r.listed ? `${r.ip} is blacklisted` : `${r.ip} is not blacklisted`),
        ...(r.listed ? [el('dl', {}, el('dt', {}, 'Why'), el('dd', { 'data-k': 'reason' }, r.reason || '—'), el('dt', {}, 'Until'), el('dd', { 'data-k': 'until' }, when(r.expiresAt)))] : []));
    } catch (err) {
      out.dataset.listed = '';
      out.textContent = err.status === 404 ? 'The blacklist API is not available on this proxy.' : err.message;
    }
  });

  $('#probe').addEventListener('click', async () => {
    const b = $('#probe');
    b.disabled = true;
    b.textContent = 'Probing…';
    try { state.probe = await api('/api/probe?domain=' + encodeURIComponent(state.domain), { method: 'POST' }); renderUpstreams(); }
    catch (e) { showError('Probe failed: ' + e.message); }
    finally { b.disabled = false; b.textContent = 'Probe now'; }
  });

  setupCharts();
  refresh();
})();
