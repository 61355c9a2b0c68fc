// The memory ledger: where the bytes of a finetuning run go (frozen weights, trainable
// parameters, gradients, optimizer states, activations), predicted for this run and for the
// other methods, and measured from the WebGPU allocator. The ledger itself comes from the engine.
//
// The bars are laid out in percentages rather than a viewBox, so the text keeps its size on a
// narrow screen while the bars stretch; every row shares one byte scale, so bars compare.

const NS = 'http://www.w3.org/2000/svg';
const ROW = 40, LABEL = 15, BAR = 16, GAP = 14, AXIS = 22;

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function html(name, attrs = {}, text) {
  const e = document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// 1024-based, as the browser and the GPU allocator count: 1536 → '1.5 KiB'.
export function formatBytes(n) {
  if (n === undefined || n === null || !Number.isFinite(Number(n))) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n), i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? Math.round(v) : v.toFixed(Math.abs(v) < 100 ? 1 : 0)} ${units[i]}`;
}

const partBytes = (row, part) => Number(row.bytes?.[part]) || 0;
const rowTotal = (row, parts) => (Number.isFinite(row.total) ? row.total : parts.reduce((s, p) => s + partBytes(row, p), 0));

// ledger: { parts, labels, rows: [{ label, bytes: {part: n}, total, current?, measured?, note? }],
//           formula: [line], measuredNote }. Replaces the container's children.
export function memoryLedger(container, ledger) {
  const { parts = [], labels = {}, rows = [], formula = [], measuredNote } = ledger ?? {};
  if (!rows.length) {
    container.replaceChildren(html('p', { class: 'chart-empty' }, 'no ledger yet'));
    return;
  }
  const scale = Math.max(1, ...rows.map((r) => Math.max(rowTotal(r, parts), parts.reduce((s, p) => s + partBytes(r, p), 0))));
  const pct = (b) => `${((b / scale) * 100).toFixed(3)}%`;
  const thisRun = (r) => r.current || r.measured;

  // This run's rows first, then the comparisons, with a gap between the two groups.
  const ordered = [...rows.filter(thisRun), ...rows.filter((r) => !thisRun(r))];
  const split = rows.filter(thisRun).length;
  const top = (k) => k * ROW + (split && k >= split ? GAP : 0);
  const height = top(ordered.length) + AXIS;

  const svg = el('svg', { class: 'ledger-bars', width: '100%', height, role: 'img',
    'aria-label': `memory per method: ${ordered.map((r) => `${r.label} ${formatBytes(rowTotal(r, parts))}`).join('; ')}` });
  if (split) svg.append(el('rect', { x: 0, y: 0, width: '100%', height: top(split) - 4, rx: 4, class: 'ledger-group' }));

  ordered.forEach((row, k) => {
    const total = rowTotal(row, parts);
    const y = top(k);
    const g = el('g', { class: ['ledger-row', row.current && 'current', row.measured && 'measured'].filter(Boolean).join(' '),
      'data-total': String(total), 'data-label': row.label });
    const name = el('text', { x: 4, y: y + LABEL - 2, class: 'ledger-label' }, row.label);
    if (row.note) name.append(el('tspan', { class: 'ledger-note' }, `  (${row.note})`));
    g.append(name, el('text', { x: '100%', dx: -4, y: y + LABEL - 2, 'text-anchor': 'end', class: 'ledger-total' }, formatBytes(total)));
    let at = 0;
    for (const part of parts) {
      const b = partBytes(row, part);
      // Zero-byte and sub-pixel segments stay in the DOM: the tests and screen readers count them.
      const seg = el('rect', { x: pct(at), y: y + LABEL + 2, width: pct(b), height: BAR,
        class: `segment part-${part}`, 'data-part': part, 'data-bytes': String(b) });
      seg.append(el('title', {}, `${labels[part] ?? part}: ${formatBytes(b)}`));
      g.append(seg);
      at += b;
    }
    svg.append(g);
  });

  // The shared scale: 0, half and the largest total.
  const y = top(ordered.length) + 4;
  svg.append(el('line', { x1: 0, y1: y, x2: '100%', y2: y, class: 'axis' }));
  for (const [x, anchor, b] of [['0', 'start', 0], ['50%', 'middle', scale / 2], ['100%', 'end', scale]]) {
    svg.append(el('text', { x, y: y + 15, 'text-anchor': anchor, class: 'tick' }, formatBytes(b)));
  }

  const legend = html('ul', { class: 'ledger-legend' });
  for (const part of parts) {
    const li = html('li', { 'data-part': part });
    li.append(html('span', { class: `swatch part-${part}`, 'aria-hidden': 'true' }), document.createTextNode(labels[part] ?? part));
    legend.append(li);
  }

  const out = [svg, legend];
  const base = ledger.base;
  if (base) {
    // The frozen weights as the device holds them, measured (the buffers the model allocated),
    // beside the formula: for QLoRA the 4.127 bits a linear weight.
    const bits = base.linear_bits
      ? `; linear weights in ${base.quantization} at ${base.linear_bits.toFixed(3)} bits each (${base.linear_bits_on_device.toFixed(3)} with each matrix's code tables)`
      : '';
    const alloc = base.allocator_after_load ? ` The allocator held ${formatBytes(base.allocator_after_load)} once the base was ready.` : '';
    out.push(html('p', { class: 'hint ledger-base', 'data-device-bytes': String(base.device_bytes), 'data-predicted': String(base.predicted) },
      `Frozen weights on the device: ${formatBytes(base.device_bytes)} measured${bits}; the formula predicts ${formatBytes(base.predicted)}; ` +
      `${formatBytes(base.f32_bytes)} in f32.${alloc}`));
  }
  if (rows.some((r) => r.measured) && measuredNote) out.push(html('p', { class: 'hint ledger-measured-note' }, `Measured: ${measuredNote.replace(/\.?$/, '.')}`));
  if (formula.length) {
    const ol = html('ol', { class: 'formula' });
    for (const line of formula) ol.append(html('li', {}, line));
    out.push(ol);
  }
  container.replaceChildren(...out);
}
