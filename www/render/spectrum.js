// Singular values of the LoRA updates ΔW = (α/r)·B·A and their effective rank, as SVG. How much
// of the rank r an adapter really uses is the question "LoRA: Low-Rank Adaptation" (Hu et al.,
// 2021, §7) asks of its updates; the numbers come from the engine, this file only draws them.
import { lineChart, el } from './chart.js';
import { formatScale } from './heatmap.js';

// modules: [{ path, values: [σ1 ≥ σ2 ≥ …], effectiveRank }]. Every module is a faint line for
// context; the selected one (by path, else the first) is drawn as bars.
export function spectrumChart(svg, modules, { selected } = {}) {
  const W = 640, H = 240, L = 58, R = 12, T = 24, B = 32;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const shown = (modules ?? []).filter((m) => m.values?.length);
  if (!shown.length) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'no adapter yet'));
    return;
  }
  const sel = shown.find((m) => m.path === selected) ?? shown[0];
  const all = shown.flatMap((m) => m.values).filter(Number.isFinite);
  const rMax = Math.max(...shown.map((m) => m.values.length));
  // A log axis shows the tail of small σ's, which is the point; it needs every value > 0.
  const log = all.length > 0 && all.every((v) => v > 0);
  let y0 = log ? Math.min(...all) : Math.min(0, ...all), y1 = Math.max(...all, y0);
  if (log && y1 / y0 < 1.01) { y0 /= 2; y1 *= 2; }
  if (!log && y1 - y0 < 1e-12) y1 = y0 + 1;
  const ty = log ? Math.log10 : (v) => v;
  const sy = (v) => T + (1 - (ty(Math.min(y1, Math.max(y0, v))) - ty(y0)) / (ty(y1) - ty(y0))) * (H - T - B);
  const band = (W - L - R) / rMax;
  const sx = (i) => L + (i + 0.5) * band; // i is 0-based; the axis reads 1..r

  svg.append(el('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
  svg.append(el('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
  const yTicks = [y0, log ? Math.sqrt(y0 * y1) : (y0 + y1) / 2, y1];
  for (const v of yTicks) svg.append(el('text', { x: L - 4, y: sy(v) + 4, 'text-anchor': 'end', class: 'tick' }, formatScale(v)));
  const xTicks = rMax <= 16 ? [...Array(rMax).keys()] : [0, Math.floor(rMax / 2) - 1, rMax - 1];
  for (const i of xTicks) svg.append(el('text', { x: sx(i), y: H - B + 16, 'text-anchor': 'middle', class: 'tick' }, String(i + 1)));
  svg.append(el('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle', class: 'tick' }, 'index i of σᵢ'));
  // Rotated, beside the axis: the first bar reaches the top of the plot, where chart.js puts it.
  const ym = (T + H - B) / 2;
  svg.append(el('text', { x: 12, y: ym, transform: `rotate(-90 12 ${ym})`, 'text-anchor': 'middle', class: 'tick axis-label' }, log ? 'σ (log scale)' : 'σ'));

  for (const m of shown) {
    if (m === sel) continue;
    const pts = m.values.map((v, i) => (Number.isFinite(v) ? `${sx(i).toFixed(1)},${sy(v).toFixed(1)}` : null)).filter(Boolean);
    const line = el('polyline', { points: pts.join(' '), class: 'spectrum-other' });
    line.append(el('title', {}, m.path));
    svg.append(line);
  }

  const g = el('g', { class: 'spectrum-selected', 'data-path': sel.path, 'data-values': JSON.stringify(sel.values) });
  g.append(el('title', {}, sel.path));
  const bw = Math.max(1, band * 0.6);
  sel.values.forEach((v, i) => {
    if (!Number.isFinite(v)) return;
    g.append(el('rect', { x: (sx(i) - bw / 2).toFixed(1), y: sy(v).toFixed(1), width: bw.toFixed(1),
      height: Math.max(0, sy(y0) - sy(v)).toFixed(1), class: 'spectrum-bar' }));
  });
  svg.append(g);

  const er = Number.isFinite(sel.effectiveRank) ? sel.effectiveRank.toFixed(1) : '–';
  svg.append(el('text', { x: L, y: 14, class: 'tick spectrum-path' }, sel.path));
  svg.append(el('text', { x: W - R, y: 14, 'text-anchor': 'end', class: 'caption' }, `effective rank ${er} of r = ${sel.values.length}`));
}

// history: [{ step, ranks: { path: effectiveRank } }] → the mean over modules and the selected
// module's, by step. A collapsing effective rank shows the adapter settling into few directions.
export function effectiveRankHistory(svg, history, { selected } = {}) {
  const mean = [], mine = [];
  let modules = 0;
  for (const { step, ranks } of history ?? []) {
    const vs = Object.values(ranks ?? {}).filter(Number.isFinite);
    modules = Math.max(modules, vs.length);
    if (vs.length) mean.push([step, vs.reduce((a, b) => a + b, 0) / vs.length]);
    if (selected !== undefined && Number.isFinite(ranks?.[selected])) mine.push([step, ranks[selected]]);
  }
  const series = [{ label: `mean over ${modules} modules`, points: mean, cls: 'mean' }];
  if (mine.length) series.push({ label: selected, points: mine, cls: 'selected' });
  lineChart(svg, series, { xLabel: 'step', yLabel: 'effective rank' });
  if (!mean.length) return;
  // lineChart has no legend; its viewBox is 640 wide with a 12 px right margin.
  series.forEach((s, k) => {
    svg.append(el('text', { x: 628, y: 24 + 14 * k, 'text-anchor': 'end', class: `tick legend ${s.cls}` }, s.label));
  });
}
