// The channel to the worker that owns the engine (wasm module, device, model). Commands are
// typed messages; answers resolve promises; streamed events go to `onPartial`.
//
// A worker that dies (a panic in the engine, a lost GPU device) cannot be trusted again: the
// controller calls `restart`, which drops every pending command with an error and starts a
// fresh worker.
import { showError } from './dom.js';

let worker = null;
const pending = new Map();
let nextId = 1;
const fatalListeners = [];

// Messages that mean the engine itself crashed (a panic in the wasm module), not just that one
// command failed. A lost GPU device is not guessed from text: the worker forwards the browser's
// own signal as a `deviceLost` message.
const FATAL = /panicked|unreachable|RuntimeError|memory access out of bounds/i;

export function onFatal(fn) {
  fatalListeners.push(fn);
}

function start() {
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = ({ data }) => {
    if (data.deviceLost) {
      fatalListeners.forEach((fn) => fn(data.error));
      return;
    }
    const waiter = pending.get(data.id);
    if (!waiter) {
      if (data.error) {
        showError(data.error);
        if (FATAL.test(data.error)) fatalListeners.forEach((fn) => fn(data.error));
      }
      return;
    }
    if (data.partial) {
      waiter.onPartial?.(data);
      return;
    }
    pending.delete(data.id);
    if (data.error) {
      const err = new Error(data.error);
      err.fatal = FATAL.test(data.error);
      waiter.reject(err);
      if (err.fatal) fatalListeners.forEach((fn) => fn(data.error));
    } else {
      waiter.resolve(data);
    }
  };
  worker.onerror = (e) => {
    e.preventDefault();
    showError(`The engine could not start: ${e.message || 'the worker failed to load'}. ` +
              'If you built the page yourself, run scripts/play so the wasm bundle exists.');
  };
}

// `onPartial` receives streamed events (tokens, steps) before the final answer.
export function send(cmd, args = {}, { onPartial, transfer = [] } = {}) {
  if (!worker) start();
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onPartial });
    worker.postMessage({ id, cmd, ...args }, transfer);
  });
}

// Throw the worker away and start a new one; pending commands fail with `reason`.
export function restart(reason) {
  worker?.terminate();
  worker = null;
  for (const [, waiter] of pending) waiter.reject(Object.assign(new Error(reason), { fatal: true }));
  pending.clear();
  start();
}
