// The worker owns the wasm module and the device. Messages are typed:
//   in:  {id, cmd, ...args}
//   out: {id, event, ...data}  or  {id, error}
import init, { Session, referenceCheck, version, onDeviceLost, loseDevice, memoryCalculator } from './pkg/tinytune.js';

const ready = init().catch((e) => {
  throw new Error(`this browser cannot run tinytune's WebAssembly (${e.message}). The engine needs ` +
    'WebAssembly SIMD and GC: Chrome or Edge 119, Firefox 120, Safari 18.2 or newer');
});
// The browser's own device-loss signal (GPUDevice.lost, through wgpu): the page restarts the
// engine on it.
ready.then(() => onDeviceLost((reason, message) => {
  self.postMessage({ id: null, deviceLost: true, error: `the GPU device was lost (${reason}${message ? `: ${message}` : ''})` });
}));
const sessions = { main: null, cpu: null };
let stopRequested = false;
let measuring = null; // a step measurement in flight (measureStep)
const view = { path: null }; // the module whose matrices are shown

async function fetchText(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`could not load ${url.pathname}: HTTP ${r.status}`);
  return r.text();
}

// Spectra of every adapted module, the chosen module's matrices, and the memory ledger.
async function views(maxSide = 96) {
  const paths = sessions.main.adaptedPaths();
  if (!paths.length) return { paths, spectra: [], matrices: null, memory: safeLedger() };
  if (!paths.includes(view.path)) view.path = paths[0];
  const spectra = await sessions.main.spectra();
  const matrices = await sessions.main.adapterMatrices(view.path, maxSide);
  return { paths, spectra, matrices, memory: safeLedger() };
}

function safeLedger() {
  try {
    return sessions.main.memoryLedger();
  } catch {
    return null; // no run yet: the ledger is for a run
  }
}

async function trainLoop(id, info, { evalEvery, inspectEvery, checkpointEvery, inspectPath, maxSide }) {
  if (inspectPath) view.path = inspectPath;
  self.postMessage({ id, partial: true, event: 'train-start', ...info });
  stopRequested = false;
  const losses = [];
  const started = performance.now();
  let tokens = 0;
  let last = null;
  const post = (event, data, transfer = []) => self.postMessage({ id, partial: true, event, ...data }, transfer);
  const checkpoint = async () => {
    const { names, files } = await sessions.main.checkpoint();
    const buffers = files.map((f) => f.buffer);
    post('checkpoint', { step: last.step, totalSteps: last.total_steps, names, files: buffers }, buffers);
  };
  post('views', { step: info.step, ...(await views(maxSide)) });
  while (!stopRequested) {
    const r = await sessions.main.trainStep();
    if (!r) break;
    last = r;
    tokens += r.tokens;
    losses.push(r.loss);
    const seconds = (performance.now() - started) / 1000;
    post('step', { ...r, tokensPerSecond: tokens / seconds });
    const end = r.step >= r.total_steps;
    if (evalEvery > 0 && (r.step % evalEvery === 0 || end)) {
      const v = await sessions.main.validLoss();
      if (v) post('valid', { step: r.step, ...v });
    }
    if (inspectEvery > 0 && (r.step % inspectEvery === 0 || end)) post('views', { step: r.step, ...(await views(maxSide)) });
    if (checkpointEvery > 0 && (r.step % checkpointEvery === 0 || end)) await checkpoint();
    await new Promise((resolve) => setTimeout(resolve, 0)); // let a "stop" or "select" message in
  }
  if (stopRequested && last) {
    // Stopped by the user: keep where it got to, so Resume continues from here.
    if (evalEvery > 0) {
      const v = await sessions.main.validLoss();
      if (v) post('valid', { step: last.step, ...v });
    }
    post('views', { step: last.step, ...(await views(maxSide)) });
    await checkpoint();
  }
  sessions.main.releaseTraining();
  return { event: 'trained', losses, stopped: stopRequested, step: last ? last.step : info.step };
}

// A software rasteriser behind WebGPU (SwiftShader, llvmpipe, lavapipe, WARP): the browser says
// so with isFallbackAdapter, or the adapter's names do.
function isSoftware(adapter) {
  return adapter.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe|software|microsoft basic render/i.test(
    `${adapter.vendor} ${adapter.architecture} ${adapter.device} ${adapter.description}`);
}

// Ask the browser for its adapter only to report what it is (vendor, architecture); the engine
// then asks for its own device through burn's wgpu runtime.
async function browserAdapter() {
  if (!('gpu' in navigator) || !navigator.gpu) {
    return { adapter: null, reason: 'this browser does not expose WebGPU (navigator.gpu is missing)' };
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return { adapter: null, reason: `requesting a WebGPU adapter failed: ${e.message}` };
  }
  if (!adapter) {
    return { adapter: null, reason: 'WebGPU is present but no adapter was found (the GPU may be blocklisted or disabled)' };
  }
  const info = adapter.info || {};
  const limits = {};
  for (const k of ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize',
                   'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupsPerDimension']) {
    limits[k] = adapter.limits[k];
  }
  return {
    adapter: {
      vendor: info.vendor || '', architecture: info.architecture || '', device: info.device || '',
      description: info.description || '', isFallbackAdapter: !!info.isFallbackAdapter,
      features: [...adapter.features].sort(), limits,
    },
    reason: null,
  };
}

const commands = {
  // `gpu`: 'auto' (WebGPU unless the adapter is a software renderer, which the CPU engine
  // beats), 'on' (WebGPU whatever the adapter) or 'off'.
  async open({ gpu = 'auto', offReason }) {
    await ready;
    sessions.cpu = sessions.cpu || Session.openCpu();
    let fallbackReason = null;
    let adapter = null;
    let software = false;
    if (gpu === 'off' || gpu === false) {
      fallbackReason = offReason || 'WebGPU was turned off for this page (gpu=off in the address)';
    } else {
      const found = await browserAdapter();
      adapter = found.adapter;
      fallbackReason = found.reason;
      software = !!adapter && isSoftware(adapter);
      if (software && gpu !== 'on') {
        const name = [adapter.vendor, adapter.architecture, adapter.description].filter(Boolean).join(' ') || 'unnamed';
        fallbackReason = `the WebGPU adapter (${name}) is a software renderer, which is slower than the page's CPU engine ` +
          '(a LoRA step of the built-in model: about 24 s on SwiftShader against 1.5 s on the CPU engine); add ?gpu=on to the address to use it anyway';
      } else if (adapter) {
        try {
          sessions.main = await Session.openWebGpu();
        } catch (e) {
          fallbackReason = `WebGPU did not start: ${e.message}`;
        }
      }
    }
    if (fallbackReason) sessions.main = sessions.cpu;
    return { event: 'device', device: sessions.main.deviceInfo(), adapter, fallbackReason, software, version: version() };
  },

  async check({ on = 'main' }) {
    const session = sessions[on];
    if (!session) throw new Error(`no ${on} device is open yet: send "open" first`);
    const started = performance.now();
    const result = await session.runCheck();
    return { event: 'check', on, device: session.deviceInfo(), result, ms: performance.now() - started };
  },

  // The 4-bit kernels against the CPU path, on the main device.
  async q4Check() {
    const started = performance.now();
    const result = await sessions.main.q4Check();
    return { event: 'q4-check', device: sessions.main.deviceInfo(), result, ms: performance.now() - started };
  },

  // A load the engine refuses before letting go of the previous model (too large, a bad
  // config) answers `model-refused` with `kept: true`; the page then keeps using that model.
  async loadModel({ files, budgetMib }) {
    await ready;
    if (!sessions.main) throw new Error('no device is open yet: send "open" first');
    const started = performance.now();
    try {
      const summary = sessions.main.loadModel(files.map((f) => f.name), files.map((f) => new Uint8Array(f.bytes)), budgetMib ?? undefined);
      return { event: 'model', summary, ms: performance.now() - started };
    } catch (e) {
      return { event: 'model-refused', message: (e && e.message) || String(e), kept: sessions.main.hasModel() };
    }
  },

  // Destroy the WebGPU device, as a driver reset would: the loss arrives through the real signal.
  async loseDevice() {
    return { event: 'lose-device', destroyed: loseDevice() };
  },

  async encode({ text }) {
    return { event: 'ids', ids: Array.from(sessions.main.encode(text)) };
  },

  async evalLoss({ texts, seqLen = 1024 }) {
    const started = performance.now();
    const report = await sessions.main.evalLoss(texts, seqLen);
    return { event: 'eval', report, ms: performance.now() - started };
  },

  async logits({ ids }) {
    const values = await sessions.main.logits(Uint32Array.from(ids));
    return { event: 'logits', values: Array.from(values) };
  },

  async generate({ prompt, sampling, chat = false }, id) {
    const ids = chat ? sessions.main.encodeChat(prompt) : sessions.main.encode(prompt);
    const started = performance.now();
    let count = 0;
    stopRequested = false;
    const result = await sessions.main.generate(ids, sampling, (token, text) => {
      count += 1;
      self.postMessage({ id, partial: true, event: 'token', token, text });
      return !stopRequested;
    });
    const secs = (performance.now() - started) / 1000;
    return { event: 'generated', ids: result.ids, stop: result.stop, tokensPerSecond: count / secs, seconds: secs };
  },

  // Train with a run config (the keys of run.toml) on the loaded model, streaming each step,
  // the valid loss every `evalEvery` steps, the views (spectra, matrices, memory) every
  // `inspectEvery` steps, and a checkpoint every `checkpointEvery` steps.
  async train({ runToml, dataName, dataText, evalEvery = 10, inspectEvery = 5, checkpointEvery = 10, inspectPath, maxSide }, id) {
    const info = await sessions.main.startTraining(runToml, dataName, dataText);
    return trainLoop(id, info, { evalEvery, inspectEvery, checkpointEvery, inspectPath, maxSide });
  },

  // Time one LoRA step of this run's shape on random tokens, before any run (the page's estimate
  // of a run's time). Other commands wait for it rather than find the model busy.
  async measureStep({ runToml }) {
    const timing = sessions.main.measureStep(runToml);
    measuring = timing.catch(() => {}).finally(() => { measuring = null; });
    return { event: 'measured', ...(await timing) };
  },

  // Continue from checkpoint files (as `checkpoint` events gave them) on the same data.
  async resume({ names, files, dataName, dataText, evalEvery = 10, inspectEvery = 5, checkpointEvery = 10, inspectPath, maxSide }, id) {
    const info = await sessions.main.resumeTraining(names, files.map((f) => new Uint8Array(f)), dataName, dataText);
    return trainLoop(id, info, { evalEvery, inspectEvery, checkpointEvery, inspectPath, maxSide });
  },

  // Which module the matrices view shows; takes effect at the next view update.
  async select({ path }) {
    view.path = path;
    return { event: 'selected', path };
  },

  async inspect({ path, maxSide }) {
    if (path) view.path = path;
    return { event: 'views', ...(await views(maxSide)) };
  },

  async exportAdapter({ baseModel }) {
    const { config, weights } = await sessions.main.exportAdapter(baseModel || 'tinytune-model');
    return { event: 'adapter', config, weights };
  },

  async importAdapter({ config, weights }) {
    const info = sessions.main.importAdapter(config, new Uint8Array(weights));
    return { event: 'imported', ...info, paths: sessions.main.adaptedPaths() };
  },

  // The same prompt and seed through the base model (adapter off) and with the adapter.
  async compare({ prompt, sampling, chat = false }, id) {
    const ids = chat ? sessions.main.encodeChat(prompt) : sessions.main.encode(prompt);
    const out = {};
    stopRequested = false;
    try {
      for (const side of ['base', 'adapter']) {
        sessions.main.setAdapterEnabled(side === 'adapter');
        const result = await sessions.main.generate(ids, sampling, (token, text) => {
          self.postMessage({ id, partial: true, event: 'token', side, token, text });
          return !stopRequested;
        });
        out[side] = result;
      }
    } finally {
      sessions.main.setAdapterEnabled(true);
    }
    return { event: 'compared', ...out };
  },

  // A built-in task's metric on its test split (the first `limit` examples), with the adapter
  // on or off.
  // The memory calculator: no model needed.
  async calculator({ config, batch, seq, rank, targets, bf16 = false, checkpointing = false }) {
    await ready;
    return { event: 'calculator', ...memoryCalculator(config, batch, seq, rank, targets, bf16, checkpointing) };
  },

  async taskMetric({ task, limit = 20, adapter = true, shots = 0 }, id) {
    const base = new URL(`./assets/builtin/tasks/${task}/`, self.location.href);
    const taskJson = await fetchText(new URL('task.json', base));
    const testName = JSON.parse(taskJson).files?.test || 'test.jsonl';
    const test = await fetchText(new URL(testName, base));
    sessions.main.setAdapterEnabled(adapter);
    try {
      const started = performance.now();
      const report = await sessions.main.taskMetric(task, taskJson, test, limit, shots, (done, total) => {
        self.postMessage({ id, partial: true, event: 'task-progress', done, total });
      });
      return { event: 'task', adapter, report, seconds: (performance.now() - started) / 1000 };
    } finally {
      sessions.main.setAdapterEnabled(true);
    }
  },

  async preview({ dataName, dataText, seqLen = 128, n = 3 }) {
    // (examples, total, skipped, format, and over the whole file tokens and learned)
    return { event: 'preview', ...sessions.main.previewData(dataName, dataText, seqLen, false, n) };
  },

  async linearPaths() {
    return { event: 'paths', paths: sessions.main.linearPaths() };
  },

  async precisionMatrix({ path, bins = 80 }) {
    return { event: 'precision', ...(await sessions.main.precisionMatrix(path, bins)) };
  },

  async precisionLoss({ format, dataName, dataText, seqLen = 128, limit = 32 }) {
    const started = performance.now();
    const r = await sessions.main.precisionLoss(format, dataName, dataText, seqLen, limit);
    return { event: 'precision-loss', format, ...r, seconds: (performance.now() - started) / 1000 };
  },

  // Combine adapters (PEFT files) into one; the result comes back as files, not attached.
  async mergeAdapters({ items, options, trace = '', maxSide = 96 }) {
    const started = performance.now();
    const r = sessions.main.mergeAdapters(items.map((i) => i.config), items.map((i) => new Uint8Array(i.weights)), options, trace, maxSide);
    return { event: 'merged', ...r, ms: performance.now() - started };
  },

  async heldOutLoss({ dataName, dataText, seqLen = 128, limit = 16 }) {
    return { event: 'held-out', ...(await sessions.main.heldOutLoss(dataName, dataText, seqLen, limit)) };
  },

  async mergedModelFiles() {
    const { names, files } = await sessions.main.mergedModelFiles();
    return { event: 'model-files', names, files: files.map((f) => f.buffer) };
  },

  async serveBench({ items, prompts, maxNewTokens = 16 }, id) {
    const reports = await sessions.main.serveBench(items.map((i) => i.name), items.map((i) => i.config),
      items.map((i) => new Uint8Array(i.weights)), prompts, maxNewTokens, (mode) => self.postMessage({ id, partial: true, event: 'serve-mode', mode }));
    return { event: 'served', reports };
  },

  async setAdapter({ on }) {
    sessions.main.setAdapterEnabled(on);
    return { event: 'adapter-set', on };
  },

  async stop() {
    stopRequested = true;
    return { event: 'stopping' };
  },

  async reference() {
    await ready;
    return { event: 'reference', result: referenceCheck() };
  },
};

self.onmessage = async ({ data }) => {
  const { id, cmd, ...args } = data || {};
  const handler = commands[cmd];
  if (!handler) {
    self.postMessage({ id, error: `unknown command "${cmd}"` });
    return;
  }
  if (measuring && cmd !== 'stop') await measuring;
  try {
    self.postMessage({ id, ...(await handler(args, id)) });
  } catch (e) {
    self.postMessage({ id, error: (e && e.message) || String(e) });
  }
};

// Errors outside a command (a failed module load, a panic) still reach the page.
self.addEventListener('error', (e) => self.postMessage({ id: null, error: e.message || 'worker error' }));
self.addEventListener('unhandledrejection', (e) => self.postMessage({ id: null, error: String(e.reason?.message || e.reason) }));
