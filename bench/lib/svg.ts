// A tiny SVG line chart, no dependencies: panels stacked vertically, one line
// per series, x in seconds, an optional shaded band (the attack window).
export interface Series { name: string; values: (number | null)[] }
export interface Panel { title: string; yLabel: string; series: Series[]; yMax?: number; percent?: boolean }

const COLORS = ['#1a5fb4', '#c01c28', '#26a269', '#e66100', '#613583', '#865e3c'];
const esc = (s: string) => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);

export function chart(title: string, panels: Panel[], band?: { from: number; to: number; label: string }): string {
  const W = 760, PH = 220, M = { l: 60, r: 150, t: 30, b: 30 };
  const H = 30 + panels.length * (PH + M.t + M.b);
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`, `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`];
  panels.forEach((p, pi) => {
    const top = 30 + pi * (PH + M.t + M.b) + M.t, left = M.l, pw = W - M.l - M.r;
    const n = Math.max(1, ...p.series.map((s) => s.values.length));
    const max = p.yMax ?? Math.max(1, ...p.series.flatMap((s) => s.values.filter((v): v is number => v != null))) * 1.05;
    const x = (i: number) => left + (i / Math.max(1, n - 1)) * pw;
    const y = (v: number) => top + PH - (Math.min(v, max) / max) * PH;
    out.push(`<text x="${left}" y="${top - 8}" font-weight="bold">${esc(p.title)}</text>`);
    if (band) out.push(`<rect x="${x(band.from)}" y="${top}" width="${Math.max(0, x(Math.min(band.to, n - 1)) - x(band.from))}" height="${PH}" fill="#f6d32d" fill-opacity="0.18"/><text x="${x(band.from) + 4}" y="${top + 12}" fill="#9c6f00">${esc(band.label)}</text>`);
    out.push(`<rect x="${left}" y="${top}" width="${pw}" height="${PH}" fill="none" stroke="#999"/>`);
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4, yy = y(v);
      out.push(`<line x1="${left}" x2="${left + pw}" y1="${yy}" y2="${yy}" stroke="#ddd"/><text x="${left - 4}" y="${yy + 4}" text-anchor="end">${p.percent ? `${Math.round(v * 100)}%` : v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(v < 10 ? 1 : 0)}</text>`);
    }
    const step = n > 60 ? 10 : 5;
    for (let i = 0; i < n; i += step) out.push(`<text x="${x(i)}" y="${top + PH + 14}" text-anchor="middle">${i}s</text>`);
    out.push(`<text x="14" y="${top + PH / 2}" transform="rotate(-90 14 ${top + PH / 2})" text-anchor="middle">${esc(p.yLabel)}</text>`);
    p.series.forEach((s, si) => {
      const color = COLORS[si % COLORS.length];
      let d = '', pen = false;
      s.values.forEach((v, i) => { if (v == null) { pen = false; return; } d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`; pen = true; });
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8"/>`);
      out.push(`<line x1="${left + pw + 10}" x2="${left + pw + 28}" y1="${top + 10 + si * 16}" y2="${top + 10 + si * 16}" stroke="${color}" stroke-width="3"/><text x="${left + pw + 32}" y="${top + 14 + si * 16}">${esc(s.name)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n');
}
