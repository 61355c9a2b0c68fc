// The Merge section: combine adapters kept in this browser with one of PEFT's combination types,
// see what the method did to one module (TIES's sign conflicts and elected signs, the values
// pruning kept, the SVD types' spectrum and cut), measure interference (each source task's metric
// and held-out loss for the base, each source adapter, and the merge), and keep or export the
// result. Compute runs in the engine (merge/combine.rs); this file picks, asks and renders.

import { $, showError, html, download } from './dom.js';
import { send } from './engine.js';
import { text as utf8 } from './store.js';
import { drawHeatmap } from './render/heatmap.js';
import { el } from './render/chart.js';

const TASKS = ['json', 'sql', 'style', 'qa'];
const MAX_SIDE = 96;
const ABOUT = {
  linear: 'Adds the A factors and the B factors, weighted by √(w·s) each: cheap, but the product is not the sum of the updates.',
  cat: 'Stacks the factors: rank Σr, and ΔW is exactly Σ wᵢ·ΔWᵢ.',
  svd: 'Adds the full updates Σ wᵢ·ΔWᵢ, then keeps the top singular directions (the rank below).',
  ties: 'TIES on the factors: keep each adapter\'s largest values (density), elect a sign per value, average the values that agree.',
  ties_svd: 'TIES on the full updates, then an SVD back to low rank.',
  dare_linear: 'DARE on the factors: drop values at random (keep the density), rescale the rest by 1/density, add.',
  dare_ties: 'DARE\'s random drop, then TIES\'s sign election, on the factors.',
  dare_linear_svd: 'DARE on the full updates, then an SVD back to low rank.',
  dare_ties_svd: 'DARE + TIES on the full updates, then an SVD back to low rank.',
  magnitude_prune: 'Keep each adapter\'s largest values (density), then add, on the factors.',
  magnitude_prune_svd: 'Keep the largest values of each full update, add, then an SVD back to low rank.',
};

export function initMerge({ store, busy, useAdapter, modelName }) {
  const m = { ready: false, merged: null, sources: [], running: false };

  const numberOr = (id, fallback) => {
    const v = Number($(id).value);
    return $(id).value.trim() === '' || !Number.isFinite(v) ? fallback : v;
  };

  async function refresh() {
    const s = store();
    const box = $('#merge-adapters');
    if (!s) return;
    const items = (await s.list()).filter((i) => i.kind === 'adapter');
    const checked = new Set([...box.querySelectorAll('input[type=checkbox]:checked')].map((c) => c.value));
    if (!items.length) {
      box.replaceChildren(html('p', { class: 'hint' }, 'Train or import two or more adapters: they are kept in this browser and listed here.'));
    } else {
      box.replaceChildren(...items.map((item, i) => {
        const row = html('div', { class: 'merge-row', 'data-name': item.name });
        const id = `merge-pick-${i}`;
        const box = html('input', { type: 'checkbox', id, value: item.name });
        box.checked = checked.has(item.name);
        const label = html('label', { for: id }, `${item.name}${item.meta?.task && TASKS.includes(item.meta.task) ? ` (task ${item.meta.task})` : ''}`);
        const weight = html('input', { type: 'number', step: '0.1', value: '1', 'aria-label': `weight of ${item.name}`, class: 'merge-weight' });
        row.append(box, label, weight);
        return row;
      }));
    }
    refreshButtons();
  }

  function picked() {
    return [...$('#merge-adapters').querySelectorAll('.merge-row')]
      .filter((r) => r.querySelector('input[type=checkbox]').checked)
      .map((r) => ({ name: r.dataset.name, weight: Number(r.querySelector('.merge-weight').value) || 0 }));
  }

  function refreshButtons() {
    const idle = m.ready && !m.running && !busy();
    $('#merge-run').disabled = !idle || picked().length < 2;
    for (const id of ['#merge-interference', '#merge-save', '#merge-export', '#merge-export-model']) $(id).disabled = !idle || !m.merged;
    $('#serving-run').disabled = !idle || picked().length < 1;
  }

  function options(weights) {
    const combination = $('#merge-method').value;
    return {
      combination, weights, density: numberOr('#merge-density', 0.5), majority_sign: $('#merge-sign').value,
      svd_rank: $('#merge-rank').value.trim() === '' ? null : numberOr('#merge-rank', null), svd_clamp: null,
      seed: numberOr('#merge-seed', 0), scaling: 'peft',
    };
  }

  async function files(name) {
    const got = await store().get('adapter', name);
    return { name, meta: got.meta || {}, config: utf8(got.files['adapter_config.json']), weights: got.files['adapter_model.safetensors'].slice().buffer };
  }

  function drawTrace(trace) {
    const figs = $('#merge-views');
    figs.replaceChildren();
    $('#merge-spectrum').replaceChildren();
    if (!trace) return;
    const n = trace.adapters;
    const add = (label, shrunk, scale) => {
      if (!shrunk) return;
      const canvas = html('canvas', { class: 'heatmap', 'data-view': label });
      const fig = html('figure', {});
      const none = shrunk.values.every((v) => v === 0) ? ' none here' : '';
      fig.append(html('figcaption', {}, `${label}:${none} (${trace.space}, ${trace.rows} × ${trace.cols}${shrunk.method !== 'every entry shown' ? `, ${shrunk.method}` : ''})`), canvas);
      figs.append(fig);
      drawHeatmap(canvas, shrunk, scale);
    };
    add('sign conflicts: adapters that disagree with the elected sign (red: more)', trace.conflicts, n);
    add('elected sign (red +, blue −)', trace.elected, 1);
    add(`values kept, of ${n} adapters (red: all)`, trace.kept, n);
    if (trace.singular_values) spectrumWithCut($('#merge-spectrum'), trace.singular_values, trace.cut);
  }

  function spectrumWithCut(svg, values, cut) {
    const W = 640, H = 200, L = 48, R = 12, T = 12, B = 28;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const shown = values.slice(0, Math.max(cut * 4, 16));
    const top = Math.max(...shown, 1e-30);
    const bw = (W - L - R) / shown.length;
    shown.forEach((v, i) => {
      const h = (v / top) * (H - T - B);
      svg.append(el('rect', { x: (L + i * bw).toFixed(1), y: (H - B - h).toFixed(1), width: Math.max(1, bw - 1).toFixed(1), height: h.toFixed(1),
        class: i < cut ? 'spectrum-bar' : 'spectrum-other', 'data-value': String(v) }));
    });
    const x = L + cut * bw;
    svg.append(el('line', { x1: x, y1: T, x2: x, y2: H - B, class: 'merge-cut', 'data-cut': String(cut) }));
    svg.append(el('text', { x: x + 4, y: T + 10, class: 'tick' }, `rank ${cut}: kept left of the line`));
    svg.append(el('text', { x: L, y: H - 8, class: 'tick' }, `singular values of the merged ΔW (${values.length} in all)`));
  }

  async function run(module = '') {
    const chosen = picked();
    if (chosen.length < 2) return;
    m.running = true;
    refreshButtons();
    try {
      m.sources = await Promise.all(chosen.map((c) => files(c.name)));
      const items = m.sources.map((s) => ({ config: s.config, weights: s.weights.slice(0) }));
      const r = await send('mergeAdapters', { items, options: options(chosen.map((c) => c.weight)), trace: module || $('#merge-module').value || '', maxSide: MAX_SIDE },
        { transfer: items.map((i) => i.weights) });
      if (!module) {
        const sel = $('#merge-module');
        const keep = sel.value;
        sel.replaceChildren(...r.modules.map((p) => html('option', { value: p }, p)));
        if (r.modules.includes(keep)) sel.value = keep;
        if (!r.trace && r.modules.length) return run(sel.value);
      }
      m.merged = { config: r.config, weights: r.weights.slice().buffer, rank: r.rank, names: chosen.map((c) => c.name), method: $('#merge-method').value };
      drawTrace(r.trace);
      $('#merge-status').textContent = `Merged ${chosen.length} adapters with ${m.merged.method} into rank ${r.rank} (${(r.ms / 1000).toFixed(2)} s). ` +
        'It is the loaded adapter now: Compare and the task metric use it.';
      await useAdapter(r.config, r.weights.slice().buffer, `merge: ${m.merged.method} of ${m.merged.names.join(' + ')}`);
    } catch (e) {
      showError(`The merge failed: ${e.message}`);
    } finally {
      m.running = false;
      refreshButtons();
    }
  }

  // Each source task's metric and held-out loss: the base, every source adapter alone, the merge.
  async function interference() {
    if (!m.merged) return;
    const tasks = [...new Set(m.sources.map((s) => s.meta.task).filter((t) => TASKS.includes(t)))];
    if (!tasks.length) {
      showError('None of the merged adapters was trained on a built-in task, so there is no task metric to compare. Merge adapters trained on built-in tasks.');
      return;
    }
    const limit = Math.max(1, numberOr('#merge-limit', 5));
    const columns = [{ label: 'base', adapter: null }, ...m.sources.map((s) => ({ label: s.name, adapter: s })), { label: 'merged', adapter: m.merged }];
    const head = $('#merge-table thead tr');
    head.replaceChildren(html('th', { scope: 'col' }, 'task'), html('th', { scope: 'col' }, 'measure'), ...columns.map((c) => html('th', { scope: 'col' }, c.label)));
    const body = $('#merge-table tbody');
    body.replaceChildren();
    $('#merge-table').hidden = false;
    m.running = true;
    refreshButtons();
    const cells = {};
    for (const task of tasks) {
      for (const measure of ['metric', 'held-out loss']) {
        const tr = html('tr', { 'data-task': task, 'data-measure': measure });
        tr.append(html('th', { scope: 'row' }, task), html('td', {}, measure));
        for (const c of columns) {
          const td = html('td', { 'data-column': c.label }, '…');
          tr.append(td);
          cells[`${task}/${measure}/${c.label}`] = td;
        }
        body.append(tr);
      }
    }
    try {
      const data = {};
      for (const task of tasks) {
        const res = await fetch(`assets/builtin/tasks/${task}/train.jsonl`);
        data[task] = await res.text();
      }
      for (const c of columns) {
        if (c.adapter) await send('importAdapter', { config: c.adapter.config, weights: c.adapter.weights.slice(0) });
        for (const task of tasks) {
          $('#merge-status').textContent = `Measuring ${c.label} on ${task}…`;
          const r = await send('taskMetric', { task, limit, adapter: Boolean(c.adapter) });
          const main = r.report.metrics[0];
          const cell = cells[`${task}/metric/${c.label}`];
          cell.textContent = `${(100 * main.score).toFixed(0)}%`;
          cell.dataset.value = String(main.score);
          cell.title = main.label;
          await send('setAdapter', { on: Boolean(c.adapter) });
          const h = await send('heldOutLoss', { dataName: `${task}-train.jsonl`, dataText: data[task], seqLen: 128, limit: 16 });
          const lc = cells[`${task}/held-out loss/${c.label}`];
          lc.textContent = h.loss.toFixed(3);
          lc.dataset.value = String(h.loss);
        }
      }
      $('#merge-status').textContent = `Interference measured on ${limit} test examples a task (metric: ${tasks.map((t) => t).join(', ')}) and 16 held-out training examples (loss).`;
    } catch (e) {
      showError(`Measuring interference failed: ${e.message}`);
    } finally {
      await useAdapter(m.merged.config, m.merged.weights.slice(0), `merge: ${m.merged.method} of ${m.merged.names.join(' + ')}`).catch(() => {});
      m.running = false;
      refreshButtons();
    }
  }

  async function keep() {
    const name = `merged ${m.merged.method} r${m.merged.rank} ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`;
    await store().put('adapter', name, { 'adapter_config.json': m.merged.config, 'adapter_model.safetensors': new Uint8Array(m.merged.weights) },
      { model: modelName(), rank: m.merged.rank, merged: { method: m.merged.method, sources: m.merged.names } });
    $('#merge-status').textContent = `Kept as "${name}".`;
    await refresh();
  }

  async function exportModel() {
    m.running = true;
    refreshButtons();
    try {
      const { names, files } = await send('mergedModelFiles', {});
      names.forEach((n, i) => download(n, new Uint8Array(files[i]), 'application/octet-stream'));
      $('#merge-status').textContent = `Exported the model with the merged adapter folded into its weights: ${names.join(', ')}.`;
    } catch (e) {
      showError(e.message);
    } finally {
      m.running = false;
      refreshButtons();
    }
  }

  // Serving: the picked adapters and the prompts, four ways, on this device.
  async function serving() {
    const chosen = picked();
    const prompts = $('#serving-prompts').value.split('\n').map((l) => l.trim()).filter(Boolean);
    if (!chosen.length || !prompts.length) {
      showError('Pick at least one adapter above and give at least one prompt.');
      return;
    }
    m.running = true;
    refreshButtons();
    try {
      const sources = await Promise.all(chosen.map((c) => files(c.name)));
      const items = sources.map((s, i) => ({ name: `adapter${i + 1}`, config: s.config, weights: s.weights }));
      const r = await send('serveBench', { items, prompts, maxNewTokens: Math.max(1, numberOr('#serving-tokens', 16)) }, {
        transfer: items.map((i) => i.weights),
        onPartial: (ev) => { if (ev.event === 'serve-mode') $('#serving-status').textContent = `Serving: ${ev.mode}…`; },
      });
      const body = $('#serving-table tbody');
      body.replaceChildren(...r.reports.map((x) => {
        const tr = html('tr', { 'data-mode': x.mode });
        tr.append(html('th', { scope: 'row' }, x.mode), html('td', { 'data-value': String(x.tokens_per_second) }, x.tokens_per_second.toFixed(1)),
          html('td', { 'data-value': String(x.time_to_first_token_ms) }, `${x.time_to_first_token_ms.toFixed(0)} ms`),
          html('td', { 'data-value': String(x.memory_bytes ?? '') }, x.memory_bytes ? `${(x.memory_bytes / 1048576).toFixed(1)} MiB (${x.memory_source})` : '–'));
        return tr;
      }));
      $('#serving-table').hidden = false;
      $('#serving-status').textContent = `${prompts.length} prompts, ${chosen.length} adapters, greedy.`;
    } catch (e) {
      showError(`Measuring serving failed: ${e.message}`);
    } finally {
      m.running = false;
      refreshButtons();
    }
  }

  $('#serving-run').addEventListener('click', serving);
  $('#merge-adapters').addEventListener('change', refreshButtons);
  $('#merge-method').addEventListener('change', () => { $('#merge-about').textContent = ABOUT[$('#merge-method').value] || ''; });
  $('#merge-about').textContent = ABOUT[$('#merge-method').value];
  $('#merge-run').addEventListener('click', () => run());
  $('#merge-module').addEventListener('change', () => { if (m.merged) run($('#merge-module').value); });
  $('#merge-interference').addEventListener('click', interference);
  $('#merge-save').addEventListener('click', keep);
  $('#merge-export').addEventListener('click', () => {
    download('adapter_config.json', m.merged.config, 'application/json');
    download('adapter_model.safetensors', new Uint8Array(m.merged.weights), 'application/octet-stream');
  });
  $('#merge-export-model').addEventListener('click', exportModel);

  return {
    modelLoaded() {
      m.ready = true;
      m.merged = null;
      refresh();
    },
    refresh,
  };
}
