// A histogram of a weight matrix's values as SVG bars, with vertical lines at given levels
// (the 16 values NF4 can give one block). Render functions take data, not globals.
import { el } from './chart.js';

// hist: {edges: [bins + 1], counts: [bins]}; levels: [x]; caption: what the lines are.
export function histogram(svg, hist, levels = [], { levelLabel = 'levels' } = {}) {
  const W = 640, H = 220, L = 48, R = 12, T = 12, B = 32;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const { edges = [], counts = [] } = hist ?? {};
  if (!counts.length) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'no data yet'));
    return;
  }
  const x0 = Math.min(edges[0], ...levels), x1 = Math.max(edges[edges.length - 1], ...levels);
  const top = Math.max(...counts, 1);
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (c) => T + (1 - c / top) * (H - T - B);
  svg.append(el('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
  counts.forEach((c, i) => {
    const a = sx(edges[i]), b = sx(edges[i + 1]);
    svg.append(el('rect', { x: a.toFixed(2), y: sy(c).toFixed(2), width: Math.max(0.5, b - a - 0.3).toFixed(2), height: (H - B - sy(c)).toFixed(2),
      class: 'hist-bar', 'data-count': String(c) }));
  });
  for (const v of levels) {
    const x = sx(v).toFixed(2);
    svg.append(el('line', { x1: x, y1: T, x2: x, y2: H - B, class: 'hist-level', 'data-level': String(v) }));
  }
  for (const v of [x0, 0, x1]) {
    if (v < x0 || v > x1) continue;
    svg.append(el('text', { x: sx(v), y: H - B + 16, 'text-anchor': 'middle', class: 'tick' }, v.toPrecision(3)));
  }
  svg.append(el('text', { x: L - 4, y: T + 10, 'text-anchor': 'end', class: 'tick' }, String(top)));
  svg.append(el('text', { x: W - R, y: T + 10, 'text-anchor': 'end', class: 'tick' }, `lines: ${levelLabel}`));
}
