// The worker owns the wasm module and the device. Messages are typed:
//   in:  {id, cmd, ...args}
//   out: {id, event, ...data}  or  {id, error}
import init, { Session, referenceCheck, version } from './pkg/tinytune.js';

const ready = init();
const sessions = { main: null, cpu: null };
let stopRequested = false;

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
  async open({ gpu = true }) {
    await ready;
    sessions.cpu = sessions.cpu || Session.openCpu();
    let fallbackReason = null;
    let adapter = null;
    if (!gpu) {
      fallbackReason = 'WebGPU was turned off for this page (gpu=off in the address)';
    } else {
      const found = await browserAdapter();
      adapter = found.adapter;
      fallbackReason = found.reason;
      if (adapter) {
        try {
          sessions.main = await Session.openWebGpu();
        } catch (e) {
          fallbackReason = `WebGPU did not start: ${e.message}`;
        }
      }
    }
    if (fallbackReason) sessions.main = sessions.cpu;
    return { event: 'device', device: sessions.main.deviceInfo(), adapter, fallbackReason, version: version() };
  },

  async check({ on = 'main' }) {
    const session = sessions[on];
    if (!session) throw new Error(`no ${on} device is open yet: send "open" first`);
    const started = performance.now();
    const result = await session.runCheck();
    return { event: 'check', on, device: session.deviceInfo(), result, ms: performance.now() - started };
  },

  async loadModel({ files }) {
    await ready;
    if (!sessions.main) throw new Error('no device is open yet: send "open" first');
    const started = performance.now();
    const summary = sessions.main.loadModel(files.map((f) => f.name), files.map((f) => new Uint8Array(f.bytes)));
    return { event: 'model', summary, ms: performance.now() - started };
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

  async generate({ prompt, sampling }, id) {
    const ids = sessions.main.encode(prompt);
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

  // Train with a run config (the keys of run.toml) on the loaded model, streaming each step.
  async train({ runToml, dataName, dataText }, id) {
    const info = await sessions.main.startTraining(runToml, dataName, dataText);
    self.postMessage({ id, partial: true, event: 'train-start', ...info });
    stopRequested = false;
    const losses = [];
    const started = performance.now();
    let tokens = 0;
    while (!stopRequested) {
      const r = await sessions.main.trainStep();
      if (!r) break;
      tokens += r.tokens;
      losses.push(r.loss);
      const seconds = (performance.now() - started) / 1000;
      self.postMessage({ id, partial: true, event: 'step', ...r, tokensPerSecond: tokens / seconds });
      await new Promise((resolve) => setTimeout(resolve, 0)); // let a "stop" message in
    }
    return { event: 'trained', losses, stopped: stopRequested };
  },

  async exportAdapter({ baseModel }) {
    const { config, weights } = await sessions.main.exportAdapter(baseModel || 'tinytune-model');
    return { event: 'adapter', config, weights };
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
  try {
    self.postMessage({ id, ...(await handler(args, id)) });
  } catch (e) {
    self.postMessage({ id, error: (e && e.message) || String(e) });
  }
};

// Errors outside a command (a failed module load, a panic) still reach the page.
self.addEventListener('error', (e) => self.postMessage({ id: null, error: e.message || 'worker error' }));
self.addEventListener('unhandledrejection', (e) => self.postMessage({ id: null, error: String(e.reason?.message || e.reason) }));
