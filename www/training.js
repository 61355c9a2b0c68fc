// The training flow of the page, its controller: the run controls (Train / Stop / Resume, the run
// config), adapters in and out, base vs adapter comparisons and the task metric, and what is
// kept in the browser (store.js). The views it drives live beside it: data-view.js (the data
// picker and preview), live-views.js (loss, matrices, spectrum, memory), runs.js (the runs
// compared). Compute runs in the worker; these files only send commands and render.

import { $, showError, clearError, setStatus, download, html } from './dom.js';
import { DEFAULTS } from './state.js';
import { send } from './engine.js';
import { openStore, text as utf8 } from './store.js';
import { formatBytes } from './render/memory.js';
import { initRuns } from './runs.js';
import { initDataView, TASKS } from './data-view.js';
import { initLiveViews, MAX_SIDE } from './live-views.js';

const CHECKPOINT_NAME = 'last run';

export function initTraining({ state, readSampling, onSaved }) {
  const t = {
    modelReady: false, modelName: null, data: null, running: false, engineOk: true,
    losses: [], valid: [], rankHistory: [], views: null, hasAdapter: false,
    store: null, saving: Promise.resolve(), checkpoint: null, dataToken: 0, runId: null,
  };
  // The runs redraw the loss chart when ticked; the chart is drawn by the live views below.
  let redraw = () => {};
  const runs = initRuns({ onChange: () => redraw() });

  // --- buttons ----------------------------------------------------------------------------------
  function refreshButtons() {
    const idle = !t.running && t.modelReady && t.engineOk;
    $('#train').disabled = !idle || !t.data;
    $('#stop-train').disabled = !t.running;
    $('#resume-train').disabled = !idle || !resumable();
    $('#export-adapter').disabled = !idle || !t.hasAdapter;
    $('#import-adapter-button').disabled = !idle;
    $('#compare').disabled = !idle || !t.hasAdapter;
    $('#run-metric').disabled = !idle || !TASKS.includes(state.get().task);
  }
  const resumable = () => t.checkpoint && !t.checkpoint.meta.done;

  // --- data (data-view.js) and live views (live-views.js) ---------------------------------------
  const { chooseData, preview, fetchTask } = initDataView({ state, t, refreshButtons, listSaved: () => listSaved(), save: (...a) => save(...a) });
  const { renderLoss, renderViews, refreshViews, selectedPath } = initLiveViews({ state, t, runs });
  redraw = renderLoss;

  // --- run config ---------------------------------------------------------------------------------
  function runConfig() {
    const s = state.get();
    return {
      model: t.modelName || 'model', data: t.data?.name || 'data.jsonl', out: 'tinytune-run',
      method: s.method, beta: s.beta, quant_type: s.quantType, double_quant: s.doubleQuant,
      rank: s.rank, alpha: s.alpha, targets: s.targets, partial_layers: s.partialLayers,
      lr: s.lr, warmup: s.warmup, steps: s.steps, batch_size: s.batchSize, seq_len: s.seqLen, seed: s.seed,
      eval_every: s.evalEvery, valid_fraction: s.validFraction,
    };
  }

  // The keys of `tinytune train` (run.toml); strings quoted as JSON, which TOML accepts.
  const toToml = (obj) => Object.entries(obj).map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : v}`).join('\n') + '\n';

  // --- what a run will cost, from a measured step -------------------------------------------------
  // Once a model is loaded, and before any run, the engine times a LoRA step of the run's shape on
  // random tokens (a batch of at most 2, scaled to the batch size: a larger batch only runs a
  // little faster a token, so the estimate errs long). A newcomer's first run, its steps left at
  // the default and not named in the link, is sized to end in about a minute. After a run, its own pace replaces the
  // measurement.
  const STEPS_SECONDS = 55; // the steps' share of about a minute (evaluations and checkpoints take the rest; the estimate errs long)
  const pace = { secondsPerToken: null, skipped: '', measured: false, source: '', measuring: false, sizing: false, sized: '', token: 0 };
  // Steps a link names (even the default's value) were chosen: they are never resized.
  pace.touched = new URLSearchParams(location.hash.replace(/^#/, '')).has('steps');

  function renderEstimate() {
    const s = state.get();
    const el = $('#train-estimate');
    if (pace.skipped && !pace.secondsPerToken && t.modelReady) {
      el.textContent = pace.skipped;
      return;
    }
    if (pace.measuring) {
      el.textContent = 'Measuring one training step to estimate how long a run takes…';
      return;
    }
    if (!pace.secondsPerToken || !t.modelReady) {
      el.textContent = '';
      return;
    }
    const step = pace.secondsPerToken * s.batchSize * s.seqLen;
    const other = pace.measured && s.method !== 'lora' ? ` Measured for LoRA: a ${s.method === 'qlora' ? 'QLoRA' : s.method === 'dpo' ? 'DPO' : `${s.method} finetuning`} step costs more.` : '';
    el.textContent = `Estimate: about ${seconds(step * s.steps)} for ${s.steps} steps of ${s.batchSize} × ${s.seqLen} tokens, ` +
      `${step < 10 ? step.toFixed(2) : step.toFixed(0)} s a step (${pace.source}).${other}${pace.sized ? ` ${pace.sized}` : ''}`;
  }
  const seconds = (x) => (x < 90 ? `${Math.max(1, Math.round(x))} s` : x < 5400 ? `${Math.round(x / 60)} min` : `${(x / 3600).toFixed(1)} h`);

  async function measurePace() {
    const s = state.get();
    if (pace.secondsPerToken || pace.skipped || t.running || t.hasAdapter || s.method !== 'lora') return renderEstimate();
    const token = ++pace.token;
    pace.measuring = true;
    renderEstimate();
    try {
      const runToml = toToml({ ...runConfig(), batch_size: Math.min(2, s.batchSize), steps: 2 });
      const m = await send('measureStep', { runToml });
      if (token !== pace.token) return;
      pace.secondsPerToken = m.seconds / m.tokens;
      pace.measured = true;
      pace.source = `timed here on a LoRA step of ${m.batch_size} × ${m.seq_len}: ${m.seconds.toFixed(2)} s`;
      sizeFirstRun();
    } catch (e) {
      // No estimate is no loss (training reports its own pace), but say why.
      if (token !== pace.token) return;
      pace.measuring = false;
      $('#train-estimate').textContent = `No estimate of a run's time: ${e.message}.`;
      return;
    }
    pace.measuring = false;
    renderEstimate();
  }

  function sizeFirstRun() {
    const s = state.get();
    if (pace.touched || t.runId || t.checkpoint || s.steps !== DEFAULTS.steps) return;
    const stepSeconds = pace.secondsPerToken * s.batchSize * s.seqLen;
    const steps = Math.max(5, Math.min(100, Math.round(STEPS_SECONDS / stepSeconds)));
    pace.sized = `Steps set to ${steps} from the measured step, so that a first run ends in about a minute.`;
    if (steps === s.steps) return;
    pace.sizing = true;
    state.set({ steps });
    pace.sizing = false;
  }

  // A finished or stopped run's pace (its evaluations and checkpoints included) is the better guide.
  function keepPace(tokensPerSecond) {
    if (!(tokensPerSecond > 0)) return;
    ++pace.token;
    pace.measuring = false;
    pace.secondsPerToken = 1 / tokensPerSecond;
    pace.measured = false;
    pace.sized = '';
    pace.source = `the last run's pace, ${tokensPerSecond.toFixed(0)} tokens/s`;
    renderEstimate();
  }

  // --- training -------------------------------------------------------------------------------------
  function onEvent(ev, started) {
    const status = $('#train-status');
    if (ev.event === 'train-start') {
      const skipped = ev.skipped.length ? `, ${ev.skipped.length} bad lines skipped` : '';
      setStatus(status, 'running', `Training on ${ev.examples} examples (${ev.valid} held out for the valid loss)${skipped}: ` +
        `${ev.step ? `continuing at step ${ev.step} of` : ''} ${ev.total_steps} steps.${ev.note ? ` The base: ${ev.note}.` : ''}`);
      t.firstStep = ev.step;
    } else if (ev.event === 'step') {
      t.lastTokensPerSecond = ev.tokensPerSecond;
      t.losses.push([ev.step, ev.loss]);
      runs.progress(t.runId, t.losses, t.valid);
      renderLoss();
      const perStep = (performance.now() - started) / 1000 / Math.max(1, ev.step - t.firstStep);
      $('#train-stats').textContent = `step ${ev.step}/${ev.total_steps} · loss ${ev.loss.toFixed(4)} · ` +
        `${ev.tokensPerSecond.toFixed(0)} tokens/s · ETA ${Math.ceil(perStep * (ev.total_steps - ev.step))} s` + (ev.skipped ? ' · step skipped (non-finite loss)' : '') +
        (ev.reward_accuracy !== undefined ? ` · reward accuracy ${(100 * ev.reward_accuracy).toFixed(0)}% · margin ${ev.reward_margin.toFixed(3)}` : '');
    } else if (ev.event === 'valid') {
      if (!t.valid.some(([s]) => s === ev.step)) t.valid.push([ev.step, ev.loss]);
      $('#loss-chart').dataset.lastValid = String(ev.loss);
      renderLoss();
      $('#valid-stats').textContent = `valid loss ${ev.loss.toFixed(4)} (perplexity ${ev.perplexity.toFixed(2)}) at step ${ev.step}` +
        (ev.best ? ', the best so far' : '');
    } else if (ev.event === 'views') {
      renderViews(ev);
      if (ev.paths.length) t.hasAdapter = true;
    } else if (ev.event === 'checkpoint') {
      const files = Object.fromEntries(ev.names.map((n, i) => [n, new Uint8Array(ev.files[i])]));
      const meta = {
        step: ev.step, totalSteps: ev.totalSteps, done: ev.step >= ev.totalSteps, data: { name: t.data.name, source: t.data.source },
        model: t.modelName, hash: location.hash, losses: t.losses, valid: t.valid, rankHistory: t.rankHistory,
      };
      t.checkpoint = { meta };
      save('checkpoint', CHECKPOINT_NAME, files, meta);
    }
  }

  async function train({ resume = null } = {}) {
    clearError();
    $('#resume-offer').hidden = true;
    t.running = true;
    if (!resume) {
      t.losses = [];
      t.valid = [];
      t.rankHistory = [];
      t.runId = runs.start(runConfig(), t.data.source === 'upload' ? t.data.name : t.data.source);
    } else if (!t.runId) {
      t.runId = runs.latest()?.id ?? null;
    }
    t.lastTokensPerSecond = null;
    renderLoss();
    refreshButtons();
    const status = $('#train-status');
    setStatus(status, 'running', resume ? 'Restoring the checkpoint…' : 'Preparing the data and the adapter…');
    const started = performance.now();
    const s = state.get();
    const common = { evalEvery: s.evalEvery, inspectEvery: 5, checkpointEvery: 10, maxSide: MAX_SIDE, inspectPath: t.views?.paths?.length ? selectedPath(t.views.paths) : null };
    try {
      const onPartial = (ev) => onEvent(ev, started);
      const done = resume
        ? await send('resume', { ...resume, ...common }, { onPartial, transfer: resume.files })
        : await send('train', { runToml: toToml(runConfig()), dataName: t.data.name, dataText: t.data.text, ...common }, { onPartial });
      const last = t.losses.at(-1);
      // Keep the last checkpoint and the adapter first, so that "done" or "stopped" means
      // everything is saved: a reload right after loses nothing.
      await t.saving;
      const ranks = Object.values(t.rankHistory.at(-1)?.ranks || {});
      runs.finish(t.runId, { losses: t.losses, valid: t.valid, seconds: (performance.now() - started) / 1000, ledger: t.views?.memory, stopped: done.stopped,
        effectiveRank: ranks.length ? ranks.reduce((a, b) => a + b, 0) / ranks.length : null });
      if (!done.stopped && ['lora', 'dpo'].includes(state.get().method) && t.hasAdapter) await keepAdapter();
      setStatus(status, done.stopped ? 'stopped' : 'done', done.stopped
        ? `Stopped at step ${done.step}. Press Resume to continue from there.`
        : `Done: ${done.step} steps, final train loss ${last ? last[1].toFixed(4) : '–'}` +
          (t.valid.length ? `, valid loss ${t.valid.at(-1)[1].toFixed(4)}.` : '.'));
    } catch (e) {
      runs.finish(t.runId, { losses: t.losses, valid: t.valid, seconds: (performance.now() - started) / 1000, ledger: t.views?.memory, stopped: true });
      setStatus(status, 'error', e.fatal ? 'Training was interrupted: the engine stopped.' : 'Training failed.');
      if (!e.fatal) showError(e.message);
    } finally {
      t.running = false;
      keepPace(t.lastTokensPerSecond);
      refreshButtons();
    }
  }

  async function resumeRun() {
    try {
      const item = await t.store.get('checkpoint', CHECKPOINT_NAME);
      if (!item) throw new Error('there is no saved checkpoint to resume from');
      const { meta } = item;
      let data;
      if (TASKS.includes(meta.data.source)) {
        data = { name: meta.data.name, text: await fetchTask(meta.data.source, 'train.jsonl'), source: meta.data.source };
      } else {
        const kept = await t.store.get('data', meta.data.name);
        if (!kept) throw new Error(`the run's data file ${meta.data.name} is no longer kept in this browser; pick it again and train anew`);
        data = { name: meta.data.name, text: utf8(kept.files[Object.keys(kept.files)[0]]), source: 'upload' };
      }
      t.data = data;
      t.losses = meta.losses || [];
      t.valid = meta.valid || [];
      t.rankHistory = meta.rankHistory || [];
      const names = Object.keys(item.files);
      const files = names.map((n) => item.files[n].slice().buffer);
      await train({ resume: { names, files, dataName: data.name, dataText: data.text } });
    } catch (e) {
      showError(`Could not resume: ${e.message}`);
    }
  }

  // --- adapters in and out ------------------------------------------------------------------------
  async function exportAdapter() {
    const { config, weights } = await send('exportAdapter', { baseModel: t.modelName });
    return { 'adapter_config.json': config, 'adapter_model.safetensors': new Uint8Array(weights) };
  }

  async function keepAdapter() {
    const files = await exportAdapter();
    const s = state.get();
    const name = `${t.data?.source === 'upload' ? t.data.name : s.task} r${s.rank} ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`;
    await save('adapter', name, files, {
      model: t.modelName, task: s.task, rank: s.rank, alpha: s.alpha, steps: t.losses.at(-1)?.[0],
      trainLoss: t.losses.at(-1)?.[1], validLoss: t.valid.at(-1)?.[1], hash: location.hash,
    });
  }

  async function importAdapterFiles(files) {
    const byName = Object.fromEntries([...files].map((f) => [f.name, f]));
    const config = byName['adapter_config.json'];
    const weights = byName['adapter_model.safetensors'];
    if (!config || !weights) {
      showError('Import an adapter by picking both of its files: adapter_config.json and adapter_model.safetensors (as PEFT saves them).');
      return;
    }
    await importAdapter(await config.text(), await weights.arrayBuffer(), config.webkitRelativePath?.split('/')[0] || 'imported adapter', true);
  }

  async function importAdapter(configText, weightsBuffer, name, keep) {
    clearError();
    try {
      const copy = weightsBuffer.slice(0);
      const r = await send('importAdapter', { config: configText, weights: weightsBuffer }, { transfer: [weightsBuffer] });
      t.hasAdapter = true;
      setStatus($('#train-status'), 'done', `Adapter "${name}" loaded: rank ${r.r}, alpha ${r.alpha}, on ${r.layers} layers.`);
      refreshButtons();
      await refreshViews();
      if (keep) await save('adapter', name, { 'adapter_config.json': configText, 'adapter_model.safetensors': new Uint8Array(copy) }, { model: t.modelName, rank: r.r, alpha: r.alpha, imported: true });
    } catch (e) {
      showError(`The adapter could not be imported: ${e.message}`);
    }
  }

  // --- compare and task metric --------------------------------------------------------------------
  async function compare() {
    const outs = { base: $('#compare-base'), adapter: $('#compare-adapter') };
    Object.values(outs).forEach((o) => { o.textContent = ''; o.dataset.state = 'running'; });
    $('#compare').disabled = true;
    $('#stop-compare').disabled = false;
    try {
      await send('compare', { prompt: $('#compare-prompt').value, sampling: readSampling(), chat: state.get().chat }, {
        onPartial: (ev) => { if (ev.event === 'token') outs[ev.side].append(ev.text); },
      });
      Object.values(outs).forEach((o) => { o.dataset.state = 'done'; });
    } catch (e) {
      showError(e.message);
    } finally {
      $('#stop-compare').disabled = true;
      refreshButtons();
    }
  }

  async function runMetric() {
    const { task, taskLimit } = state.get();
    const statusEl = $('#metric-status');
    const table = $('#metric-table');
    $('#run-metric').disabled = true;
    const results = {};
    try {
      for (const side of t.hasAdapter ? ['base', 'adapter'] : ['base']) {
        const r = await send('taskMetric', { task, limit: taskLimit, adapter: side === 'adapter' }, {
          onPartial: (ev) => { statusEl.textContent = `${side === 'base' ? 'base model' : 'with the adapter'}: ${ev.done}/${ev.total} examples…`; },
        });
        results[side] = r.report;
      }
      const rows = results.base.metrics.map((m, i) => {
        const pct = (x) => (x === undefined ? '–' : `${(100 * x).toFixed(1)}%`);
        const tr = html('tr', { 'data-kind': m.kind });
        tr.append(html('th', { scope: 'row' }, m.label || m.kind), html('td', { class: 'before' }, pct(m.score)),
          html('td', { class: 'after' }, pct(results.adapter?.metrics[i].score)));
        return tr;
      });
      table.tBodies[0].replaceChildren(...rows);
      table.hidden = false;
      statusEl.textContent = `Task "${task}", first ${results.base.examples} test examples, greedy decoding.`;
      const main = results.base.metrics[0];
      runs.setMetric(task, main.label || main.kind, main.score, results.adapter?.metrics[0].score);
    } catch (e) {
      statusEl.textContent = '';
      showError(e.message);
    } finally {
      refreshButtons();
    }
  }

  // --- kept in the browser ------------------------------------------------------------------------
  async function listSaved() {
    if (!t.store) return [];
    try {
      return await t.store.list();
    } catch (e) {
      showError(`Browser storage could not be read: ${e.message}`);
      return [];
    }
  }

  // Saves run one after another; a failure (a full quota) is shown and loses nothing else.
  function save(kind, name, files, meta) {
    t.saving = t.saving.then(async () => {
      if (!t.store) return;
      try {
        await t.store.put(kind, name, files, meta);
        if (!t.askedPersist) {
          t.askedPersist = true;
          await t.store.requestPersist().catch(() => false);
        }
      } catch (e) {
        showError(e.quota ? e.message : `Could not keep the ${kind} "${name}" in this browser: ${e.message}`);
      }
      await renderSaved();
    });
    return t.saving;
  }

  async function renderSaved() {
    onSaved?.();
    const items = await listSaved();
    const list = $('#saved-list');
    list.replaceChildren(...items.map((item) => {
      const li = html('li', { 'data-kind': item.kind, 'data-name': item.name });
      const what = item.kind === 'checkpoint'
        ? `checkpoint: step ${item.meta.step} of ${item.meta.totalSteps}${item.meta.done ? ' (finished)' : ''}, ${item.meta.data?.name}`
        : item.kind === 'adapter'
          ? `adapter: ${item.name}${item.meta.validLoss !== undefined ? `, valid loss ${Number(item.meta.validLoss).toFixed(4)}` : ''}`
          : `data: ${item.name}`;
      li.append(html('span', { class: 'what' }, what), html('span', { class: 'hint' }, ` ${formatBytes(item.bytes)}, ${new Date(item.savedAt).toLocaleString()}`));
      if (item.kind === 'adapter') {
        const load = html('button', { type: 'button', 'aria-label': `Load adapter ${item.name}` }, 'Load');
        load.addEventListener('click', async () => {
          const got = await t.store.get('adapter', item.name);
          await importAdapter(utf8(got.files['adapter_config.json']), got.files['adapter_model.safetensors'].slice().buffer, item.name, false);
        });
        load.disabled = !t.modelReady || t.running;
        li.append(load);
      }
      const del = html('button', { type: 'button', class: 'quiet', 'aria-label': `Delete ${item.kind} ${item.name}` }, 'Delete');
      del.addEventListener('click', async () => {
        await t.store.delete(item.kind, item.name);
        if (item.kind === 'checkpoint') t.checkpoint = null;
        refreshButtons();
        await renderSaved();
      });
      li.append(del);
      return li;
    }));
    const est = await t.store.estimate();
    $('#storage-status').textContent = `${items.length} item${items.length === 1 ? '' : 's'} kept (${t.store.backend === 'opfs' ? 'origin private file system' : 'IndexedDB'}). ` +
      `${formatBytes(est.usage)} used of ${formatBytes(est.quota)}; ` +
      (est.persisted ? 'persistence granted: the browser will not evict them.' : 'persistence not granted: the browser may evict them when space runs low.');
  }

  async function openKept() {
    try {
      t.store = await openStore();
    } catch (e) {
      $('#storage-status').textContent = `This browser cannot keep work between visits: ${e.message}`;
      return;
    }
    const cp = (await listSaved()).find((i) => i.kind === 'checkpoint' && i.name === CHECKPOINT_NAME);
    if (cp) {
      t.checkpoint = { meta: cp.meta };
      if (!cp.meta.done) offerResume(`A run stopped at step ${cp.meta.step} of ${cp.meta.totalSteps} (${cp.meta.data?.name}). Press Resume to continue it.`);
      t.losses = cp.meta.losses || [];
      t.valid = cp.meta.valid || [];
      renderLoss();
    }
    await renderSaved();
    refreshButtons();
  }

  function offerResume(text) {
    const offer = $('#resume-offer');
    offer.textContent = text;
    offer.hidden = false;
  }

  // --- wiring --------------------------------------------------------------------------------------
  $('#train').addEventListener('click', () => train());
  $('#stop-train').addEventListener('click', () => send('stop'));
  $('#resume-train').addEventListener('click', resumeRun);
  $('#export-config').addEventListener('click', () => download('run.toml', toToml(runConfig()), 'text/plain'));
  $('#export-adapter').addEventListener('click', async () => {
    try {
      const files = await exportAdapter();
      for (const [name, data] of Object.entries(files)) download(name, data, name.endsWith('.json') ? 'application/json' : 'application/octet-stream');
    } catch (e) {
      showError(e.message);
    }
  });
  $('#import-adapter-button').addEventListener('click', () => $('#import-adapter').click());
  $('#import-adapter').addEventListener('change', (e) => importAdapterFiles(e.target.files));
  $('#compare').addEventListener('click', compare);
  $('#stop-compare').addEventListener('click', () => send('stop'));
  $('#compare-prompt').addEventListener('input', () => { $('#compare-prompt').dataset.auto = 'no'; });
  $('#run-metric').addEventListener('click', runMetric);
  state.subscribe((s, changed) => {
    if (changed.includes('task')) chooseData();
    if (changed.includes('seqLen')) preview();
    if (changed.includes('steps') && !pace.sizing) {
      pace.touched = true;
      pace.sized = '';
    }
    if (['steps', 'batchSize', 'seqLen', 'method'].some((k) => changed.includes(k))) renderEstimate();
    if (changed.includes('layer') || changed.includes('module')) {
      if (t.running && t.views?.paths?.length) send('select', { path: selectedPath(t.views.paths) });
      else refreshViews();
    }
    refreshButtons();
  });
  renderLoss();
  openKept().then(chooseData);

  return {
    // For the lessons: run with the current settings (resolves when the run ends), measure the
    // task metric, and the runs kept so far.
    train: () => train(),
    runMetric: () => runMetric(),
    chooseData: () => chooseData(),
    runs: () => runs.all(),
    recordMetric: (task, label, before, after) => runs.setMetric(task, label, before, after),
    data: () => t.data,
    busy: () => t.running,
    store: () => t.store,
    modelName: () => t.modelName,
    // Attach adapter files as the loaded adapter (the Merge section's result).
    useAdapter: (config, weights, name) => importAdapter(config, weights, name, false),
    modelLoaded(summary, name) {
      t.modelReady = true;
      t.modelName = name;
      t.hasAdapter = false;
      refreshButtons();
      preview();
      renderSaved();
      // A new model has its own pace.
      pace.secondsPerToken = null;
      pace.sized = '';
      measurePace();
    },
    // A software GPU adapter (chosen with ?gpu=on) takes tens of seconds for a first step, most
    // of it compiling kernels: no step is measured there, and the first run's pace is the guide.
    deviceOpened({ softwareGpu }) {
      pace.skipped = softwareGpu
        ? 'No estimate before the first run: on a software GPU adapter a measured step would itself take tens of seconds. The run shows its pace as it goes.'
        : '';
    },
    modelUnloaded() {
      t.modelReady = false;
      ++pace.token;
      pace.measuring = false;
      renderEstimate();
      refreshButtons();
    },
    // A load was refused and the model loaded before it is still in use.
    modelBack() {
      t.modelReady = true;
      refreshButtons();
    },
    engineLost() {
      t.engineOk = false;
      t.running = false;
      refreshButtons();
    },
    engineBack() {
      t.engineOk = true;
      if (resumable()) offerResume(`The device was lost and re-created. The run's last checkpoint (step ${t.checkpoint.meta.step} of ${t.checkpoint.meta.totalSteps}) is kept: press Resume to continue.`);
      refreshButtons();
    },
  };
}
