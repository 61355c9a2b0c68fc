// The controller: opens the engine, runs the device check, loads the model, generates, and
// hands the training flow to training.js. All settings live in one state object mirrored in the
// URL hash (state.js); ?gpu=off forces the CPU engine, ?gpu=on WebGPU even on a software adapter, and ?model=none skips the built-in model.

import { $, showError, setStatus, clearError, html, openSection } from './dom.js';
import { send, restart, onFatal } from './engine.js';
import { DEFAULTS, decodeHash, encodeHash, createStore } from './state.js';
import { formatBytes as bytes } from './render/memory.js';
import { initTraining } from './training.js';
import { initPrecision } from './precision.js';
import { initMerge } from './merge.js';
import { initCalculator } from './calculator.js';
import { initLessons } from './lessons.js';

// Sections folded on a first visit, so the page opens on the path a newcomer needs (lessons,
// model, data, training, loss, runs); a click on a heading folds or unfolds it, and the choice
// is kept. ('all-open' in storage opens every section: the browser tests use it.)
const FOLDED_FIRST = ['check-section', 'spectrum-section', 'calculator-section', 'precision-section', 'merge-section', 'compare-section', 'generate-section', 'saved-section'];
const FOLD_KEY = 'tinytune.sections';

function foldSections() {
  let saved = null;
  try {
    saved = localStorage.getItem(FOLD_KEY);
  } catch { /* storage blocked: the first-visit folding */ }
  let folded;
  try {
    folded = new Set(saved === 'all-open' ? [] : saved ? JSON.parse(saved) : FOLDED_FIRST);
  } catch {
    folded = new Set(FOLDED_FIRST);
  }
  const keep = () => {
    try {
      localStorage.setItem(FOLD_KEY, JSON.stringify([...document.querySelectorAll('main > section.collapsed')].map((s) => s.id)));
    } catch { /* not kept: folding still works */ }
  };
  for (const section of document.querySelectorAll('main > section')) {
    const h2 = section.querySelector(':scope > h2');
    if (!h2) continue;
    // The toggle sits before the heading, not in it, so the heading's name stays its text.
    const button = html('button', { type: 'button', class: 'fold', 'aria-controls': section.id, 'aria-label': 'Fold or unfold this section' });
    section.insertBefore(button, h2);
    const set = (open) => {
      section.classList.toggle('collapsed', !open);
      button.setAttribute('aria-expanded', String(open));
    };
    set(!folded.has(section.id));
    const toggle = () => {
      set(section.classList.contains('collapsed'));
      keep();
    };
    button.addEventListener('click', toggle);
    h2.addEventListener('click', toggle);
    section.addEventListener('unfolded', keep);
  }
  // The table of contents scrolls to a section and unfolds it. (The address's hash holds the
  // page's settings, so the links must not change it.)
  for (const a of document.querySelectorAll('#toc a')) {
    a.addEventListener('click', (e) => {
      e.preventDefault();
      const id = a.getAttribute('href').slice(1);
      openSection(id);
      document.getElementById(id)?.scrollIntoView({ behavior: 'smooth', block: 'start' });
    });
  }
}

const TOLERANCE = 1e-4;
let deviceReady = null; // resolves once the worker has opened its device

// --- state ------------------------------------------------------------------------------------
const decoded = decodeHash(location.hash);
const state = createStore(decoded.state);
if (decoded.problems.length) {
  const notice = $('#state-notice');
  notice.textContent = `Some settings in the address were not understood: ${decoded.problems.join('; ')}.`;
  notice.hidden = false;
}
state.subscribe((s) => {
  const hash = encodeHash(s);
  if (hash !== location.hash && !(hash === '' && location.hash === '')) history.replaceState(null, '', hash || location.pathname + location.search);
});

// Every input with data-key shows and edits that state key.
function bindInputs() {
  for (const input of document.querySelectorAll('[data-key]')) {
    const key = input.dataset.key;
    const checkbox = input.type === 'checkbox';
    const show = (s) => {
      if (checkbox) {
        input.checked = Boolean(s[key]);
        return;
      }
      if (document.activeElement === input) return; // never rewrite what is being typed
      if (input.tagName === 'SELECT' && ![...input.options].some((o) => o.value === String(s[key]))) return;
      if (input.value !== String(s[key])) input.value = String(s[key]);
    };
    show(state.get());
    state.subscribe((s, changed) => { if (changed.includes(key)) show(s); });
    const take = () => {
      if (checkbox) {
        state.set({ [key]: input.checked });
        return;
      }
      const raw = input.value;
      const value = typeof DEFAULTS[key] === 'number' ? Number(raw) : raw;
      if (typeof value === 'number' && (raw.trim() === '' || !Number.isFinite(value))) return;
      state.set({ [key]: value });
    };
    input.addEventListener(input.tagName === 'SELECT' ? 'change' : 'input', take);
    input.addEventListener('change', take);
  }
}

// --- rendering --------------------------------------------------------------------------------

function renderDevice({ device, adapter, fallbackReason, software }) {
  training.deviceOpened({ softwareGpu: Boolean(software) && !fallbackReason && device?.kind !== 'cpu' });
  $('#device-json').textContent = JSON.stringify({ device, adapter, fallbackReason, software }, null, 1);
  const status = $('#device-status');
  const notice = $('#device-notice');
  if (fallbackReason && software) {
    setStatus(status, 'cpu', 'Running on the CPU engine (faster here than the software WebGPU adapter).');
    notice.textContent = `tinytune chose its CPU engine: ${fallbackReason}.`;
    notice.hidden = false;
  } else if (fallbackReason) {
    setStatus(status, 'cpu', 'Running on the CPU (WebGPU unavailable).');
    notice.textContent = `WebGPU is not available: ${fallbackReason}. tinytune runs on the CPU instead. ` +
      'Everything works, only slower. Use a browser with WebGPU (recent Chrome or Edge, or Firefox/Safari with WebGPU on) for speed.';
    notice.hidden = false;
  } else {
    const who = [adapter.vendor, adapter.architecture].filter(Boolean).join(' ') || device.name || 'unknown';
    setStatus(status, 'webgpu', `WebGPU adapter: ${who}`);
    notice.hidden = true;
  }
  const rows = [];
  if (adapter) {
    rows.push(['Vendor', adapter.vendor || '(not reported)'], ['Architecture', adapter.architecture || '(not reported)']);
    if (adapter.description) rows.push(['Description', adapter.description]);
    rows.push(['Software adapter', adapter.isFallbackAdapter ? 'yes' : 'no']);
  }
  rows.push(['Engine device', device.kind === 'wgpu' ? `burn wgpu (${device.backend})` : device.name]);
  const lim = device.limits;
  if (lim) {
    rows.push(['Max buffer', bytes(lim.max_buffer_size)],
              ['Max storage binding', bytes(lim.max_storage_buffer_binding_size)],
              ['Workgroup memory', bytes(lim.max_compute_workgroup_storage_size)],
              ['Invocations per workgroup', lim.max_compute_invocations_per_workgroup],
              ['f16 in shaders', lim.shader_f16 ? 'yes' : 'no (the engine computes in f32)']);
  }
  const dl = $('#device-details');
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = String(v);
    return [dt, dd];
  }));
  dl.hidden = false;
}

function maxAbsDiff(a, b) {
  let m = Math.abs(a.loss - b.loss);
  for (const k of ['grad_w1', 'grad_w2']) {
    for (let i = 0; i < a[k].length; i++) m = Math.max(m, Math.abs(a[k][i] - b[k][i]));
  }
  return m;
}

function renderChecks(reference, runs) {
  const body = $('#check-table tbody');
  body.replaceChildren(...runs.map(({ label, result }) => {
    const tr = document.createElement('tr');
    const diff = maxAbsDiff(result, reference);
    const ok = diff <= TOLERANCE;
    for (const [text, cls] of [[label], [result.loss.toFixed(6)], [diff.toExponential(2)],
                               [ok ? 'agrees' : 'DISAGREES', ok ? 'ok' : 'bad']]) {
      const td = document.createElement('td');
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
  $('#check-table').hidden = false;
  $('#check-json').textContent = JSON.stringify({ reference, runs }, null, 1);
  return runs.every(({ result }) => maxAbsDiff(result, reference) <= TOLERANCE);
}

function renderModel(summary, ms) {
  const rows = [
    ['Architecture', summary.model_type],
    ['Parameters', summary.parameters.toLocaleString('en-US')],
    ['Layers', summary.layers],
    ['Heads', summary.kv_heads === summary.heads ? summary.heads : `${summary.heads} query, ${summary.kv_heads} key/value (grouped-query)`],
    ['Width', summary.hidden],
    ['Vocabulary', summary.vocab_size.toLocaleString('en-US')],
    ['Context', `${summary.context} tokens`],
    ['Weights', summary.quantization
      ? `${bytes(summary.file_bytes)} in the files; linear weights in ${summary.quantization}: ${bytes(summary.base_bytes)} on the device (${bytes(summary.f32_bytes)} as f32)`
      : `${bytes(summary.file_bytes)} in the files, ${bytes(summary.f32_bytes)} in memory as f32`],
    ['Embeddings', (summary.tied_embeddings ? 'tied (the output head reuses them)' : 'separate output head')
      + (summary.embedding_quantization ? `; kept in ${summary.embedding_quantization}` : '')],
  ];
  const dl = $('#model-summary');
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = String(v);
    return [dt, dd];
  }));
  dl.hidden = false;
  setStatus($('#model-status'), 'ready', `Model ready (${summary.model_type}, loaded in ${(ms / 1000).toFixed(1)} s).`);
}

// --- model files ------------------------------------------------------------------------------
const MODEL_FILE = /(^|\/)(config\.json|tokenizer\.json|tokenizer_config\.json|generation_config\.json|chat_template\.jinja|model\.safetensors\.index\.json|[^/]*\.safetensors|[^/]*\.gguf)$/i;

// Walk dropped folders (DataTransferItem entries) into File objects with their paths.
async function filesFromDrop(items) {
  const out = [];
  const walk = async (entry, path) => {
    if (entry.isFile) {
      out.push(await new Promise((res, rej) => entry.file((f) => res(Object.assign(f, { relPath: path + f.name })), rej)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      let batch;
      do {
        batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        for (const child of batch) await walk(child, `${path}${entry.name}/`);
      } while (batch.length);
    }
  };
  for (const item of items) {
    const entry = item.webkitGetAsEntry?.();
    if (entry) await walk(entry, '');
    else if (item.getAsFile()) out.push(item.getAsFile());
  }
  return out;
}

let modelLoad = Promise.resolve(); // model loads run one after another
let lastModelFiles = null; // kept to rebuild the model after an engine restart
let loadedModel = null; // the summary of the model the engine holds

async function loadModelFiles(fileList) {
  const previous = modelLoad;
  let release;
  modelLoad = new Promise((resolve) => { release = resolve; });
  try {
    await previous;
    await loadModelFilesNow(fileList);
  } finally {
    release();
  }
}

async function loadModelFilesNow(fileList) {
  const files = [...fileList].filter((f) => MODEL_FILE.test(f.relPath || f.webkitRelativePath || f.name));
  const status = $('#model-status');
  const progress = $('#model-progress');
  if (!files.some((f) => f.name === 'config.json' || /\.gguf$/i.test(f.name))) {
    setStatus(status, 'error', 'No config.json (or .gguf file) among the chosen files.');
    showError('The chosen files have no config.json. Pick the model folder, or all of its files: ' +
              'config.json, the *.safetensors weights and tokenizer.json; or one .gguf file.');
    return;
  }
  clearError();
  const total = files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  progress.hidden = false;
  progress.max = total || 1;
  progress.value = 0;
  const read = [];
  for (const f of files) {
    setStatus(status, 'reading', `Reading ${f.name} (${bytes(done)} of ${bytes(total)})…`);
    read.push({ name: f.name, bytes: await f.arrayBuffer() });
    done += f.size;
    progress.value = done;
  }
  setStatus(status, 'loading', `Building the model on the device (${bytes(total)})…`);
  try { await deviceReady; } catch { /* the device error is shown already; loading falls back below */ }
  $('#generate').disabled = true;
  training.modelUnloaded();
  try {
    const answer = await send('loadModel', { files: read, budgetMib: memoryMib }, { transfer: read.map((f) => f.bytes) });
    if (answer.event === 'model-refused') {
      // Refused before the engine let go of the loaded model: that one stays in use.
      if (answer.kept && loadedModel) {
        renderModel(loadedModel.summary, loadedModel.ms);
        setStatus(status, 'ready', `That model was refused (see the message above); ${loadedModel.summary.model_type} stays loaded.`);
        showError(`${answer.message}. The previous model stays loaded.`);
        $('#generate').disabled = false;
        training.modelBack();
      } else {
        setStatus(status, 'error', 'The model could not be loaded.');
        showError(answer.message);
      }
      return;
    }
    const { summary, ms } = answer;
    lastModelFiles = files;
    loadedModel = { summary, ms };
    renderModel(summary, ms);
    $('#generate').disabled = false;
    const first = files[0];
    training.modelLoaded(summary, (first.relPath || first.webkitRelativePath || '').split('/')[0] || 'model');
    precision.modelLoaded();
    merge.modelLoaded();
  } catch (e) {
    setStatus(status, 'error', 'The model could not be loaded.');
    showError(e.message);
  } finally {
    progress.hidden = true;
  }
}

function wireModelInputs() {
  $('#model-files').addEventListener('change', (e) => loadModelFiles(e.target.files));
  $('#model-folder').addEventListener('change', (e) => loadModelFiles(e.target.files));
  const zone = $('#drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    loadModelFiles(await filesFromDrop([...e.dataTransfer.items]));
  });
}

// The built-in model ships with the page (assets/builtin/model/). Fetch it with progress and
// load it like picked files. ?model=none skips it.
const BUILTIN_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'];

async function loadBuiltinModel() {
  const status = $('#model-status');
  const progress = $('#model-progress');
  const files = [];
  try {
    const sizes = [];
    for (const name of BUILTIN_FILES) {
      const res = await fetch(`assets/builtin/model/${name}`);
      if (!res.ok) {
        if (name === 'config.json') {
          setStatus(status, 'none', 'No built-in model in this build: load your own.');
          return;
        }
        throw new Error(`${name}: HTTP ${res.status}`);
      }
      const total = Number(res.headers.get('content-length')) || 0;
      const reader = res.body.getReader();
      const chunks = [];
      let got = 0;
      progress.hidden = false;
      progress.max = total || 1;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        got += value.length;
        progress.value = got;
        setStatus(status, 'reading', `Downloading the built-in model: ${name} (${bytes(got)}${total ? ` of ${bytes(total)}` : ''})…`);
      }
      sizes.push(got);
      files.push(Object.assign(new File(chunks, name), { relPath: `tinytune-builtin/${name}` }));
    }
  } catch (e) {
    setStatus(status, 'error', 'The built-in model could not be downloaded.');
    showError(`The built-in model could not be downloaded: ${e.message}`);
    progress.hidden = true;
    return;
  }
  await loadModelFiles(files);
}

// The .gguf models `tinytune serve` offers from this machine (~/.cache/tinytune/models, where
// scripts/get-model puts them), read-only and from the page's own origin.
async function listLocalModels() {
  let list = [];
  try {
    const res = await fetch('models/');
    if (res.ok) list = await res.json();
  } catch { /* a static host without the model folder: nothing to list */ }
  if (!Array.isArray(list) || !list.length) return;
  const select = $('#local-model');
  select.replaceChildren(...list.map(({ name, bytes: size }) => {
    const o = document.createElement('option');
    o.value = name;
    o.textContent = `${name} (${bytes(size)})`;
    return o;
  }));
  $('#local-models').hidden = false;
  $('#load-local-model').addEventListener('click', async () => {
    const name = select.value;
    const status = $('#model-status');
    try {
      setStatus(status, 'reading', `Reading ${name} from this machine…`);
      const res = await fetch(`models/${encodeURIComponent(name)}`);
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const file = new File([await res.blob()], name);
      await loadModelFiles([Object.assign(file, { relPath: name })]);
    } catch (e) {
      setStatus(status, 'error', 'The model could not be read.');
      showError(`${name} could not be read from this machine: ${e.message}`);
    }
  });
}

// --- generation -------------------------------------------------------------------------------
export function readSampling() {
  const s = state.get();
  return { max_new_tokens: s.maxNewTokens, temperature: s.temperature, top_k: s.topK, top_p: s.topP, seed: s.genSeed, stop_at_eos: true };
}

async function runGenerate() {
  const out = $('#generation');
  const prompt = $('#prompt').value;
  const span = document.createElement('span');
  span.className = 'prompt';
  span.textContent = prompt;
  out.replaceChildren(span);
  $('#generate').disabled = true;
  $('#stop-generate').disabled = false;
  $('#generate-stats').textContent = 'generating…';
  try {
    const done = await send('generate', { prompt, sampling: readSampling(), chat: state.get().chat }, {
      onPartial: ({ text }) => out.append(text),
    });
    out.dataset.state = 'done';
    $('#generate-stats').textContent = `${done.ids.length} tokens, ${done.tokensPerSecond.toFixed(1)} tokens/s, stopped: ${
      { Eos: 'end of text', MaxTokens: 'token limit', Context: 'context full', Cancelled: 'stopped' }[done.stop] || done.stop}`;
  } catch (e) {
    showError(e.message);
    $('#generate-stats').textContent = '';
  } finally {
    $('#generate').disabled = false;
    $('#stop-generate').disabled = true;
  }
}

// --- controller -------------------------------------------------------------------------------
const params = new URLSearchParams(location.search);
// ?gpu=off: the CPU engine; ?gpu=on: WebGPU even on a software adapter; otherwise WebGPU unless
// the adapter is a software renderer, which the CPU engine beats.
const gpu = ['on', 'off'].includes(params.get('gpu')) ? params.get('gpu') : 'auto';
// ?memory=MiB: treat the device as having this much memory for model weights (a model that
// needs more is refused before anything is allocated; a way to see the memory math bite).
const memoryMib = Number(params.get('memory')) > 0 ? Number(params.get('memory')) : null;
// The engine's device after recoveries: a GPU lost twice in a minute is not tried a third time.
let engineGpu = gpu !== 'off';

// A lost GPU device or a crashed engine: say so, start a fresh worker on a fresh device,
// rebuild the model, and let the training flow offer to resume from its last checkpoint.
// Recovery never loops: a second loss within a minute moves the engine to the CPU, a third
// stops restarting and asks for a reload.
let restarting = null;
const recoveries = []; // when the recent restarts began
async function recover(reason) {
  if (restarting) return restarting;
  const now = Date.now();
  while (recoveries.length && now - recoveries[0] > 60000) recoveries.shift();
  recoveries.push(now);
  training.engineLost(reason);
  if (recoveries.length > 2) {
    showError(`The engine stopped again: ${reason}. That is ${recoveries.length} times within a minute, so it is ` +
              'not restarted again. Reload the page to start over (the last checkpoint is kept in this browser).');
    setStatus($('#model-status'), 'error', 'The engine stopped.');
    return null;
  }
  if (recoveries.length === 2 && engineGpu) {
    engineGpu = false;
    showError(`The engine stopped again: ${reason}. The GPU was lost twice within a minute, so the engine now runs on ` +
              'the CPU; your last checkpoint is kept and can be resumed.');
  } else {
    showError(`The engine stopped: ${reason}. It is being restarted on a new device; ` +
              'your last checkpoint is kept and can be resumed.');
  }
  restarting = (async () => {
    restart(reason);
    deviceReady = send('open', engineGpu ? { gpu } : { gpu: 'off', offReason: 'the GPU device was lost twice within a minute' });
    renderDevice(await deviceReady);
    if (lastModelFiles) await loadModelFiles(lastModelFiles);
    training.engineBack();
  })()
    .catch((e) => showError(`The engine could not be restarted: ${e.message}. Reload the page.`))
    .finally(() => { restarting = null; });
  return restarting;
}
onFatal((reason) => recover(reason));

// The 4-bit kernels QLoRA runs on (WGSL on WebGPU, plain Rust on the CPU) against the CPU path.
async function checkQ4(kind) {
  const status = $('#q4-status');
  setStatus(status, 'running', 'Checking the 4-bit kernels…');
  try {
    const { result, ms } = await send('q4Check');
    const where = kind === 'wgpu' ? 'The WGSL 4-bit kernels on WebGPU' : 'The 4-bit path on the CPU';
    const n = result.cases.length;
    const differing = result.cases.filter((c) => c.differing).length;
    setStatus(status, result.trusted ? 'done' : 'failed', result.trusted
      ? `${where}: dequantization equals the CPU path bit for bit on ${n} matrices (NF4, FP4, double quantization, GGUF's Q4_0 and Q4_1); ` +
        `the fused multiply agrees within ${result.fused_max_rel_diff.toExponential(1)} (${(ms / 1000).toFixed(1)} s).`
      : differing
        ? `${where} DISAGREE with the CPU path on ${differing} of ${n} matrices: QLoRA on this device cannot be trusted.`
        : `${where}: the fused multiply strays ${result.fused_max_rel_diff.toExponential(1)} from dequantize-then-multiply (more than 1e-5): QLoRA on this device cannot be trusted.`);
    $('#check-json').textContent += `\n${JSON.stringify({ q4: result }, null, 1)}`;
  } catch (e) {
    setStatus(status, 'error', `The 4-bit kernels could not run: ${e.message}`);
  }
}

async function main() {
  const checkStatus = $('#check-status');
  try {
    deviceReady = send('open', { gpu });
    const opened = await deviceReady;
    $('#version').textContent = `tinytune ${opened.version}`;
    renderDevice(opened);
    setStatus(checkStatus, 'running', 'Running the check…');
    const { result: reference } = await send('reference');
    const runs = [];
    const onMain = await send('check', { on: 'main' });
    runs.push({ label: onMain.device.kind === 'wgpu' ? 'WebGPU' : 'CPU (wasm)', kind: onMain.device.kind, result: onMain.result, ms: onMain.ms });
    if (onMain.device.kind === 'wgpu') {
      const onCpu = await send('check', { on: 'cpu' });
      runs.push({ label: 'CPU (wasm)', kind: 'cpu', result: onCpu.result, ms: onCpu.ms });
    }
    const ok = renderChecks(reference, runs);
    if (params.get('model') !== 'none') loadBuiltinModel();
    else if ($('#model-status').dataset.state === 'waiting') setStatus($('#model-status'), 'none', 'No model loaded.');
    // The 4-bit kernels: on demand, and once when QLoRA is first chosen (they take a few
    // seconds to compile on a software GPU, which every page open need not pay).
    let q4Done = false;
    const q4 = () => {
      q4Done = true;
      $('#q4-check').disabled = true;
      return checkQ4(onMain.device.kind).finally(() => { $('#q4-check').disabled = false; });
    };
    $('#q4-check').disabled = false;
    $('#q4-check').addEventListener('click', q4);
    const onMethod = (s) => { if (s.method === 'qlora' && !q4Done) q4(); };
    state.subscribe((s, changed) => { if (changed.includes('method')) onMethod(s); });
    onMethod(state.get());
    setStatus(checkStatus, ok ? 'done' : 'failed', ok
      ? `Check passed on ${runs.map((r) => r.label).join(' and ')}.`
      : 'Check FAILED: a device disagrees with the reference (see the table).');
  } catch (e) {
    setStatus(checkStatus, 'error', 'The check could not run.');
    showError(e.message);
  }
}

let merge = null;
const training = initTraining({ state, readSampling, onSaved: () => merge?.refresh() });
const precision = initPrecision({ currentData: () => training.data(), busy: () => training.busy() });
merge = initMerge({ store: () => training.store(), busy: () => training.busy(), useAdapter: training.useAdapter, modelName: () => training.modelName() });
const calculator = initCalculator();
const lessons = initLessons({ state, training, calculator });
foldSections();
// The page's command channel, for the browser tests and the curious (devtools).
window.tinytune = { send, state, recover, restarting: () => restarting !== null, lessons };
bindInputs();
wireModelInputs();
listLocalModels();
$('#generate').addEventListener('click', runGenerate);
$('#stop-generate').addEventListener('click', () => send('stop'));
main();
