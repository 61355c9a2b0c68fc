// The Precision section: one weight matrix of the loaded model in every number format the course
// covers. The engine computes (quant/formats.rs, inspect/precision.rs); this file picks the
// matrix, asks the worker and renders.

import { $, showError, html } from './dom.js';
import { send } from './engine.js';
import { histogram } from './render/histogram.js';

const FORMATS = ['fp32', 'fp16', 'bf16', 'fp8_e4m3', 'fp8_e5m2', 'int8', 'fp4', 'nf4', 'nf4_dq'];
// Examples for the held-out loss (the section's setting, 32 by default: enough to rank the
// formats, quick on a CPU).
const heldOut = () => Math.max(1, Math.min(1000, Number($('#precision-limit').value) || 32));

export function initPrecision({ currentData, busy }) {
  const p = { ready: false, report: null, losses: {}, measuring: false };

  const fmt = (v, digits = 3) => (Number.isFinite(v) ? (Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(2) : v.toFixed(digits)) : '–');

  function renderTable() {
    const body = $('#precision-table tbody');
    const r = p.report;
    if (!r) return;
    body.replaceChildren(...r.formats.map((f) => {
      const tr = html('tr', { 'data-format': f.format });
      const loss = p.losses[f.format];
      // The exact numbers ride along in data-value, for the tests and the curious.
      for (const [text, cls, value] of [[f.name], [f.bits.toFixed(3), 'bits', f.bits], [fmt(f.rmse, 5), 'rmse', f.rmse],
        [fmt(f.max_abs, 5), 'max', f.max_abs], [loss === undefined ? '–' : fmt(loss, 4), 'loss', loss], [f.about, 'about']]) {
        const attrs = cls ? { class: cls } : {};
        if (value !== undefined) attrs['data-value'] = String(value);
        tr.append(html('td', attrs, text));
      }
      return tr;
    }));
    $('#precision-table').hidden = false;
  }

  async function show(path) {
    if (!path) return;
    try {
      const r = await send('precisionMatrix', { path, bins: 80 });
      p.report = r;
      histogram($('#precision-histogram'), r.histogram, r.block.levels, { levelLabel: `NF4 levels of block ${r.block.block}` });
      $('#precision-block').textContent = `${r.path}: ${r.shape[0]} × ${r.shape[1]} = ${(r.shape[0] * r.shape[1]).toLocaleString('en-US')} weights. ` +
        `The lines are the 16 values NF4 can give block ${r.block.block} (absmax ${r.block.absmax.toPrecision(3)}), the block ` +
        'with the largest absmax; every other block scales the same 16 levels by its own absmax.';
      renderTable();
    } catch (e) {
      showError(e.message);
    }
  }

  async function measure() {
    const data = currentData();
    if (!data) {
      showError('Pick data first: the held-out loss is measured on the held-out fifth of the chosen data.');
      return;
    }
    p.measuring = true;
    refresh();
    try {
      for (const [i, format] of FORMATS.entries()) {
        $('#precision-status').textContent = `Measuring the held-out loss: ${format} (${i + 1} of ${FORMATS.length})…`;
        const r = await send('precisionLoss', { format, dataName: data.name, dataText: data.text, seqLen: 128, limit: heldOut() });
        p.losses[format] = r.loss;
        renderTable();
        if (i === FORMATS.length - 1) {
          $('#precision-status').textContent = `Held-out loss on ${r.examples} examples of ${data.name}, every linear weight in each format.`;
        }
      }
    } catch (e) {
      showError(e.message);
      $('#precision-status').textContent = `Measuring stopped: ${e.message}`;
    } finally {
      p.measuring = false;
      refresh();
    }
  }

  function refresh() {
    $('#precision-loss').disabled = !p.ready || p.measuring || busy();
  }

  $('#precision-matrix').addEventListener('change', (e) => show(e.target.value));
  $('#precision-loss').addEventListener('click', measure);

  return {
    async modelLoaded() {
      p.ready = true;
      p.losses = {};
      try {
        const paths = (await send('linearPaths', {})).paths;
        $('#precision-matrix').replaceChildren(...paths.map((path) => html('option', { value: path }, path)));
        $('#precision-status').textContent = 'Pick a matrix; measure the held-out loss to see what each format costs the model.';
        refresh();
        await show(paths[0]);
      } catch (e) {
        showError(e.message);
      }
    },
    refresh,
  };
}
