// The memory calculator: the ledger's formula for any Hugging Face config.json (pasted or picked)
// or a preset, full finetuning vs LoRA vs QLoRA at a chosen batch, sequence length and rank, with
// the formula and the assumptions shown. The arithmetic is the engine's (`tinytune memory`).

import { $, html, showError } from './dom.js';
import { send } from './engine.js';
import { formatBytes } from './render/memory.js';

const PARTS = ['weights', 'trainable', 'gradients', 'optimizer', 'activations'];

// The rows as table rows: method, each part, the total.
export function calculatorRows(result) {
  return result.rows.map((r) => {
    const tr = html('tr', { 'data-method': r.method, 'data-total': String(r.total) });
    tr.append(html('th', { scope: 'row' }, r.method), ...PARTS.map((p) => html('td', { 'data-part': p }, formatBytes(r.parts[p]))),
      html('td', { class: 'total' }, formatBytes(r.total)));
    return tr;
  });
}

export function initCalculator() {
  const source = () => {
    const preset = $('#calc-preset').value;
    return preset === 'paste' ? $('#calc-config').value : preset;
  };

  async function run() {
    const status = $('#calc-status');
    try {
      const result = await send('calculator', {
        config: source(), batch: Number($('#calc-batch').value), seq: Number($('#calc-seq').value), rank: Number($('#calc-rank').value),
        targets: $('#calc-targets').value || 'all-linear', bf16: $('#calc-bf16').checked, checkpointing: $('#calc-ckpt').checked,
      });
      $('#calc-table').tBodies[0].replaceChildren(...calculatorRows(result));
      $('#calc-table').hidden = false;
      $('#calc-formula').textContent = result.formula;
      status.textContent = `${result.params.toLocaleString('en-US')} parameters. Assumptions: activations in ${result.assumptions.bf16_activations ? 'bf16 (2 bytes)' : 'f32 (4 bytes)'}` +
        `, ${result.assumptions.checkpointing ? 'gradient checkpointing (one block recomputed at a time)' : 'every activation kept for the backward pass'}; AdamW; nothing else (no framework overhead, no fragmentation).`;
      return result;
    } catch (e) {
      status.textContent = '';
      showError(`Memory calculator: ${e.message}`);
      throw e;
    }
  }

  $('#calc-preset').addEventListener('change', () => { $('#calc-config').hidden = $('#calc-preset').value !== 'paste'; });
  $('#calc-file').addEventListener('change', async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    $('#calc-config').value = await f.text();
    $('#calc-preset').value = 'paste';
    $('#calc-config').hidden = false;
  });
  $('#calc-run').addEventListener('click', () => run().catch(() => {}));
  return { run, set(values) {
    for (const [id, v] of Object.entries(values)) {
      const el = $(id);
      if (el.type === 'checkbox') el.checked = v; else el.value = v;
    }
    $('#calc-config').hidden = $('#calc-preset').value !== 'paste';
  } };
}
