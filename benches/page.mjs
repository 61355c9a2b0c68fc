#!/usr/bin/env node
// The page's engines in headless Chromium, measured: LoRA training tokens/s and greedy generation
// tokens/s on the built-in model, through the same worker commands the page's buttons send.
//
//   TINYTUNE_BIN=<target>/debug/tinytune node benches/page.mjs [--gpu off|on] [--steps 6]
//     [--batch-size 8] [--seq-len 128] [--new-tokens 128] [--method lora|qlora]
//
// Run from the repository root after scripts/build-wasm. It prints figures and asserts nothing.
// Training: LoRA r 8 on every linear layer, batch 8 x 128 unless told, on the built-in model's own corpus
// (continued pretraining), the first step not timed. Generation: 128 new tokens unless told,
// greedy, after the training (with --method qlora, through the 4-bit base).
import { readFileSync } from 'node:fs';
import { launch, startServer } from '../tests/browser/harness.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const gpu = arg('gpu', 'off');
const steps = Number(arg('steps', '6'));
const batch = Number(arg('batch-size', '8'));
const seqLen = Number(arg('seq-len', '128'));
const newTokens = Number(arg('new-tokens', '128'));
const method = arg('method', 'lora');
const RUN = { method, rank: 8, alpha: 16, steps, batch_size: batch, seq_len: seqLen, lr: 0.001, seed: 1, targets: 'all-linear' };
const toml = (o) => Object.entries(o).map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : v}`).join('\n');
const dataText = readFileSync('www/assets/builtin/corpus/valid.txt', 'utf8');

const server = await startServer();
const browser = await launch();
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  const opened = performance.now();
  await page.goto(`${server.base}?gpu=${gpu}`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#model-status[data-state=ready]', { timeout: 300000 });
  const loadSeconds = (performance.now() - opened) / 1000;
  const result = await page.evaluate(async ([runToml, text, newTokens]) => {
    const { send } = await import('/engine.js');
    const stamps = [];
    const sent = performance.now();
    const trained = await send('train', { runToml, dataName: 'valid.txt', dataText: text, evalEvery: 0, inspectEvery: 0, checkpointEvery: 0 },
      { onPartial: (ev) => { if (ev.event === 'step') stamps.push({ at: performance.now(), tokens: ev.tokens, loss: ev.loss }); } });
    const generated = await send('generate', { prompt: 'Once upon a time,', sampling: { max_new_tokens: newTokens, temperature: 0, top_k: 0, top_p: 1, seed: 0, stop_at_eos: false } });
    return { sent, stamps, losses: trained.losses, generated: { count: generated.ids.length, tokensPerSecond: generated.tokensPerSecond, seconds: generated.seconds } };
  }, [toml(RUN), dataText, newTokens]);
  const { stamps } = result;
  if (stamps.length < 2) throw new Error(`only ${stamps.length} steps reported`);
  const timed = stamps.slice(1);
  const seconds = (timed.at(-1).at - stamps[0].at) / 1000;
  const tokens = timed.reduce((s, x) => s + x.tokens, 0);
  console.log(`engine: ${gpu === 'off' ? 'wasm CPU' : 'WebGPU'}, ${method}; page ready in ${loadSeconds.toFixed(1)} s`);
  console.log(`training: ${timed.length} timed steps of ${batch} x ${seqLen}, ${(seconds / timed.length).toFixed(2)} s a step, ${(tokens / seconds).toFixed(0)} tokens/s` +
    ` (first step ${((stamps[0].at - result.sent) / 1000).toFixed(2)} s after Train; losses ${result.losses.map((l) => l.toFixed(3)).join(' ')})`);
  console.log(`generation: ${result.generated.count} ids in ${result.generated.seconds.toFixed(2)} s, ${result.generated.tokensPerSecond.toFixed(1)} tokens/s`);
} finally {
  await browser.close();
  server.stop();
}
