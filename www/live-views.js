// The live views of a run: the loss chart (with the runs ticked in the Runs table laid over it),
// the A, B and ΔW heatmaps of the chosen module, the spectrum and effective rank of every adapted
// module, and the memory ledger. The worker computes them; this file renders. `t` is the
// training controller's state, shared.

import { $, showError, html } from './dom.js';
import { send } from './engine.js';
import { lineChart } from './render/chart.js';
import { drawHeatmap, drawLegend, sharedScale, formatScale } from './render/heatmap.js';
import { spectrumChart, effectiveRankHistory } from './render/spectrum.js';
import { memoryLedger } from './render/memory.js';

export const MAX_SIDE = 96; // heatmap cells a side; larger matrices are shrunk by block means

export function initLiveViews({ state, t, runs }) {
  function renderLoss() {
    lineChart($('#loss-chart'), [
      ...runs.overlays(t.runId),
      { label: 'train', points: t.losses, cls: 'train' },
      { label: 'valid', points: t.valid, cls: 'valid' },
    ]);
  }

  // Layer and module pickers from the adapted paths: model.layers.3.self_attn.q_proj → 3, q_proj.
  function splitPath(path) {
    const m = /\.(\d+)\.(.+)$/.exec(path);
    return m ? { layer: Number(m[1]), module: m[2].split('.').at(-1) } : { layer: 0, module: path };
  }

  function selectedPath(paths) {
    const { layer, module } = state.get();
    return paths.find((p) => { const s = splitPath(p); return s.layer === layer && s.module === module; }) || paths[0];
  }

  function fillPickers(paths) {
    const parts = paths.map(splitPath);
    const layers = [...new Set(parts.map((p) => p.layer))];
    const modules = [...new Set(parts.map((p) => p.module))];
    const fill = (sel, values) => {
      if (sel.options.length === values.length && [...sel.options].every((o, i) => o.value === String(values[i]))) return;
      sel.replaceChildren(...values.map((v) => html('option', { value: String(v) }, String(v))));
    };
    fill($('#inspect-layer'), layers);
    fill($('#inspect-module'), modules);
    const chosen = splitPath(selectedPath(paths));
    $('#inspect-layer').value = String(chosen.layer);
    $('#inspect-module').value = chosen.module;
  }

  function renderViews(v) {
    t.views = v;
    if (!v.paths.length) {
      $('#matrices-note').textContent = ['lora', 'qlora', 'dpo'].includes(state.get().method)
        ? 'Train or import an adapter to see its matrices.'
        : 'Full and partial finetuning have no low-rank factors: only LoRA and QLoRA runs show matrices and spectra.';
    } else {
      fillPickers(v.paths);
      const m = v.matrices;
      if (m) {
        const scale = sharedScale(m.a, m.b, m.delta);
        drawHeatmap($('#heat-a'), m.a, scale);
        drawHeatmap($('#heat-b'), m.b, scale);
        drawHeatmap($('#heat-delta'), m.delta, scale);
        drawLegend($('#heat-legend'), scale);
        $('#cap-a').textContent = `A: ${m.rank} × ${m.in}`;
        $('#cap-b').textContent = `B: ${m.out} × ${m.rank}`;
        $('#cap-delta').textContent = `ΔW = ${m.scale.toFixed(3)}·B·A: ${m.out} × ${m.in}`;
        const shrunk = [m.a, m.b, m.delta].filter((x) => x.method !== 'every entry shown');
        $('#matrices-note').textContent = `${m.path}, step ${v.step ?? '–'}. Colour scale ±${formatScale(scale)}, shared by the three. ` +
          (shrunk.length ? `Shown ${m.delta.rows} × ${m.delta.cols} for ΔW: ${m.delta.method}; A and B likewise along their long side.` : 'Every entry shown.');
      }
      const spectra = v.spectra || [];
      spectrumChart($('#spectrum-chart'), spectra, { selected: m?.path });
      if (spectra.length && v.step !== undefined && !t.rankHistory.some((h) => h.step === v.step)) {
        t.rankHistory.push({ step: v.step, ranks: Object.fromEntries(spectra.map((s) => [s.path, s.effectiveRank])) });
      }
      effectiveRankHistory($('#rank-chart'), t.rankHistory, { selected: m?.path });
    }
    if (v.memory) memoryLedger($('#memory-ledger'), v.memory);
  }

  async function refreshViews() {
    if (!t.modelReady || t.running) return;
    try {
      const paths = t.views?.paths || [];
      renderViews({ step: t.views?.step, ...(await send('inspect', { path: paths.length ? selectedPath(paths) : null, maxSide: MAX_SIDE })) });
    } catch (e) {
      showError(e.message);
    }
  }

  return { renderLoss, renderViews, refreshViews, selectedPath };
}
