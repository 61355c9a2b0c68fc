// Line charts as SVG. Render functions take data, not globals.
const NS = 'http://www.w3.org/2000/svg';

// An SVG element with attributes (and text); the other renderers use it too.
export function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// series: [{label, points: [[x, y], ...], cls}]. Draws into `svg` (an <svg> element).
export function lineChart(svg, series, { xLabel = 'step', yLabel = 'loss' } = {}) {
  const W = 640, H = 240, L = 48, R = 12, T = 12, B = 32;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  if (!all.length) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'no data yet'));
    return;
  }
  const xs = all.map(([x]) => x), ys = all.map(([, y]) => y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  svg.append(el('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
  svg.append(el('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
  for (const v of [y0, (y0 + y1) / 2, y1]) {
    svg.append(el('text', { x: L - 4, y: sy(v) + 4, 'text-anchor': 'end', class: 'tick' }, v.toFixed(3)));
  }
  for (const v of [x0, x1]) svg.append(el('text', { x: sx(v), y: H - B + 16, 'text-anchor': 'middle', class: 'tick' }, String(v)));
  svg.append(el('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle', class: 'tick' }, xLabel));
  svg.append(el('text', { x: L + 6, y: T + 10, class: 'tick' }, yLabel));
  for (const s of series) {
    const pts = s.points.filter(([, y]) => Number.isFinite(y)).map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    // The values ride along, for screen readers' descriptions and the tests.
    svg.append(el('polyline', { points: pts, class: `line ${s.cls || ''}`, 'data-points': String(s.points.length),
      'data-values': JSON.stringify(s.points.map(([, y]) => y)) }));
  }
}
