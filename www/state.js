// All UI state in one object, mirrored in the URL hash, so a run is a shareable link (the
// TensorFlow Playground's idea). Pure functions plus a tiny store; the controller wires them to
// `location.hash` and to the form.

export const DEFAULTS = Object.freeze({
  task: 'json', method: 'lora', beta: 0.1, quantType: 'nf4', doubleQuant: true, rank: 8, alpha: 16, lr: 0.002, steps: 20, batchSize: 8, seqLen: 128, seed: 0,
  targets: 'all-linear', partialLayers: 1, warmup: 0, evalEvery: 10, validFraction: 0.05, layer: 0, module: 'q_proj',
  prompt: 'Once upon a time,', chat: false, maxNewTokens: 48, temperature: 0.8, topK: 0, topP: 0.95, genSeed: 0,
  comparePrompt: '', taskLimit: 10,
});

// The range each number may take. A link is untrusted input: `#rank=1000000` or a batch of a
// billion would ask the engine for memory no device has, so such a value keeps its default and
// the problem is shown. (The engine checks again: rank against each layer's shape, sizes
// against the model.) The README's "Limits and errors" table lists these.
export const LIMITS = Object.freeze({
  rank: { min: 1, max: 1024, integer: true },
  alpha: { min: 1e-6, max: 1e6 },
  lr: { min: 1e-9, max: 10 },
  beta: { min: 1e-6, max: 1000 },
  steps: { min: 1, max: 100000, integer: true },
  batchSize: { min: 1, max: 512, integer: true },
  seqLen: { min: 2, max: 8192, integer: true },
  seed: { min: 0, max: 4294967295, integer: true },
  partialLayers: { min: 1, max: 1024, integer: true },
  warmup: { min: 0, max: 100000, integer: true },
  evalEvery: { min: 0, max: 100000, integer: true },
  validFraction: { min: 0, max: 0.5 },
  layer: { min: 0, max: 1023, integer: true },
  maxNewTokens: { min: 1, max: 4096, integer: true },
  temperature: { min: 0, max: 100 },
  topK: { min: 0, max: 4194304, integer: true },
  topP: { min: 0, max: 1 },
  genSeed: { min: 0, max: 4294967295, integer: true },
  taskLimit: { min: 1, max: 10000, integer: true },
});

function outOfRange(key, n, limits) {
  const l = limits[key];
  if (!l) return null;
  if (l.integer && !Number.isInteger(n)) return `${key}: ${n} is not a whole number`;
  if (n < l.min || n > l.max) return `${key}: ${n} is outside ${l.min}…${l.max}`;
  return null;
}

// A link is typed by hand and shared, so a bad value costs only that value: the default stays
// and the problem is reported, never thrown.
function coerce(key, raw, fallback, limits) {
  switch (typeof fallback) {
    case 'number': {
      // Number('') is 0 and Number(' 8 ') is 8; a blank is a mistake, not a zero.
      const n = raw.trim() === '' ? NaN : Number(raw);
      if (!Number.isFinite(n)) return { problem: `${key}: '${raw}' is not a number; using ${fallback}` };
      const why = outOfRange(key, n, limits);
      return why ? { problem: `${why}; using ${fallback}` } : { value: n };
    }
    case 'boolean':
      if (raw === 'true' || raw === '1') return { value: true };
      if (raw === 'false' || raw === '0') return { value: false };
      return { problem: `${key}: '${raw}' is not true or false; using ${fallback}` };
    default:
      return { value: raw };
  }
}

// '#rank=4&prompt=Hi+there' → { state, problems }. Repeated keys: the last one wins.
export function decodeHash(hash, defaults = DEFAULTS, limits = LIMITS) {
  const state = { ...defaults };
  const problems = [];
  // URLSearchParams does the percent- and '+'-decoding, and tolerates malformed escapes.
  for (const [key, raw] of new URLSearchParams(String(hash ?? '').replace(/^#/, ''))) {
    if (!Object.hasOwn(defaults, key)) {
      problems.push(`unknown setting '${key}' ignored`);
      continue;
    }
    const { value, problem } = coerce(key, raw, defaults[key], limits);
    if (problem) {
      problems.push(problem);
      state[key] = defaults[key];
    } else {
      state[key] = value;
    }
  }
  return { state, problems };
}

// Only what differs from the defaults, in the defaults' order, so equal states give equal links
// and a link stays short. '' when nothing differs (a bare '#' would be noise in the address).
export function encodeHash(state, defaults = DEFAULTS) {
  const params = new URLSearchParams();
  for (const [key, fallback] of Object.entries(defaults)) {
    if (Object.hasOwn(state, key) && state[key] !== fallback) params.set(key, String(state[key]));
  }
  const s = params.toString();
  return s ? `#${s}` : '';
}

// get / set(patch) / subscribe(fn). Subscribers hear (state, changedKeys) only when something
// changed, so writing the hash from a subscriber cannot loop back through `hashchange`.
export function createStore(initial = DEFAULTS) {
  let state = { ...initial };
  const subscribers = new Set();
  return {
    get: () => state,
    set(patch) {
      const changed = Object.keys(patch).filter((k) => !Object.is(state[k], patch[k]));
      if (!changed.length) return changed;
      state = { ...state, ...patch };
      for (const fn of subscribers) fn(state, changed);
      return changed;
    },
    subscribe(fn) {
      subscribers.add(fn);
      return () => subscribers.delete(fn);
    },
  };
}
