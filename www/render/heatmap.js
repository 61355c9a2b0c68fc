// Matrices as canvas heatmaps, one pixel per entry, on a diverging colour scale shared by the
// matrices being compared (so equal colours mean equal values across them). The scale is a
// signed square root of v / max: early in training ΔW is a tenth of A's size, and on a linear
// scale it would look blank; the legend marks ±max/4 where the colour is half way. The colour
// maths is pure, so node tests it without a DOM.

// ColorBrewer's RdBu, 5 classes: calm, colour-blind safe, near-white at zero.
const STOPS = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
const NAN = [170, 170, 170];
const NS = 'http://www.w3.org/2000/svg';

// Writes v's colour into out[at..at+3]; shared by colorFor and pixels so a million-pixel matrix
// allocates nothing per entry.
function paint(out, at, v, maxAbs) {
  if (Number.isNaN(v)) {
    out[at] = NAN[0]; out[at + 1] = NAN[1]; out[at + 2] = NAN[2];
    return;
  }
  const u = Math.min(1, Math.max(-1, v / (maxAbs > 0 ? maxAbs : 1e-12)));
  const t = Math.sign(u) * Math.sqrt(Math.abs(u));
  const p = (t + 1) * 2; // 0..4 across the five stops
  const i = Math.min(3, Math.floor(p));
  const f = p - i;
  const a = STOPS[i], b = STOPS[i + 1];
  for (let c = 0; c < 3; c++) out[at + c] = Math.round(a[c] + (b[c] - a[c]) * f);
}

// v → [r, g, b]: blue below zero, near-white at zero, red above (square-root scale); clamped at
// ±maxAbs; NaN grey.
export function colorFor(v, maxAbs) {
  const rgb = [0, 0, 0];
  paint(rgb, 0, v, maxAbs);
  return rgb;
}

// Row-major values → RGBA bytes for an ImageData of cols × rows.
export function pixels(values, rows, cols, maxAbs) {
  const n = rows * cols;
  if (values.length < n) throw new Error(`heatmap: ${values.length} values cannot fill ${rows} × ${cols}`);
  const out = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    paint(out, i * 4, values[i], maxAbs);
    out[i * 4 + 3] = 255;
  }
  return out;
}

// max |v| over every matrix's finite values; never 0, so a zero matrix still divides safely.
export function sharedScale(...matrices) {
  let m = 1e-12;
  for (const mat of matrices) {
    for (const v of mat?.values ?? []) if (Number.isFinite(v) && Math.abs(v) > m) m = Math.abs(v);
  }
  return m;
}

// Scale labels: short, and exponent form only where decimals would run long.
export function formatScale(x) {
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? x.toExponential(1) : String(Number(x.toPrecision(2)));
}

// One canvas pixel per entry; CSS stretches it (image-rendering: pixelated keeps entries sharp).
export function drawHeatmap(canvas, { values, rows, cols }, maxAbs = sharedScale({ values })) {
  canvas.width = cols;
  canvas.height = rows;
  canvas.getContext('2d').putImageData(new ImageData(pixels(values, rows, cols, maxAbs), cols, rows), 0, 0);
  Object.assign(canvas.dataset, { rows: String(rows), cols: String(cols), maxAbs: String(maxAbs) });
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', `heatmap ${rows} × ${cols}, colour scale ±${formatScale(maxAbs)}`);
}

function svgEl(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// The colour bar for a scale, into an <svg>: SVG keeps its numbers crisp at any size.
export function drawLegend(svg, maxAbs) {
  const W = 240, H = 34, pad = 12, bar = 12;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `square-root colour scale from −${formatScale(maxAbs)} (blue) through 0 (white) to +${formatScale(maxAbs)} (red)`);
  svg.dataset.maxAbs = String(maxAbs);
  svg.replaceChildren();
  // Ids must be unique in the page; several legends may coexist.
  const id = `heat-gradient-${Math.random().toString(36).slice(2, 10)}`;
  const grad = svgEl('linearGradient', { id });
  for (let k = 0; k <= 10; k++) {
    const t = k / 5 - 1; // colour position −1..1; the value there is sign(t)·t²·max
    const [r, g, b] = colorFor(Math.sign(t) * t * t * maxAbs, maxAbs);
    grad.append(svgEl('stop', { offset: `${k * 10}%`, 'stop-color': `rgb(${r},${g},${b})` }));
  }
  const defs = svgEl('defs');
  defs.append(grad);
  svg.append(defs, svgEl('rect', { x: pad, y: 2, width: W - 2 * pad, height: bar, fill: `url(#${id})`, class: 'legend-bar' }));
  const s = formatScale(maxAbs);
  const q = formatScale(maxAbs / 4);
  const quarter = (W - 2 * pad) / 4;
  for (const [x, anchor, label] of [[pad, 'start', `−${s}`], [pad + quarter, 'middle', `−${q}`], [W / 2, 'middle', '0'],
    [W - pad - quarter, 'middle', `+${q}`], [W - pad, 'end', `+${s}`]]) {
    svg.append(svgEl('line', { x1: x, y1: 2 + bar, x2: x, y2: 2 + bar + 4, class: 'axis' }));
    svg.append(svgEl('text', { x, y: H - 2, 'text-anchor': anchor, class: 'tick' }, label));
  }
}
