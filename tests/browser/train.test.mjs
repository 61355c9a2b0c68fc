// The same run config trained in the browser worker (WebGPU and the wasm CPU path) and natively
// with `tinytune train --device cpu`: the first 3 losses agree within 1e-3 (small, as SwiftShader is slow).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { scratchDir, serverAndBrowser } from './harness.mjs';

const TOLERANCE = 1e-3;
const MODEL = 'tests/fixtures/tiny-llama';
const DATA = 'tests/fixtures/corpus/eval.jsonl';
const RUN = { method: 'lora', rank: 4, alpha: 8, steps: 3, batch_size: 4, seq_len: 64, lr: 0.01, seed: 5, targets: 'all-linear' };
const toml = (o) => Object.entries(o).map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : v}`).join('\n');

const env = serverAndBrowser({ before, after });

function nativeLosses() {
  const out = scratchDir('tinytune-native-');
  execFileSync(process.env.TINYTUNE_BIN, ['train', '--device', 'cpu', '--model', MODEL, '--data', DATA, '--out', out,
    '--rank', '4', '--alpha', '8', '--steps', '3', '--batch-size', '4', '--seq-len', '64', '--lr', '0.01', '--seed', '5'],
  { stdio: ['ignore', 'ignore', 'inherit'] });
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => 'loss' in r).map((r) => r.loss);
}

async function browserLosses(query) {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(env.server.base + query, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#check-status[data-state=done]', { timeout: 180000 });
    const files = readdirSync(MODEL).filter((f) => /\.(json|safetensors)$/.test(f) && !['reference.json', 'logits.safetensors'].includes(f));
    await page.setInputFiles('#model-files', files.map((f) => join(MODEL, f)));
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });
    const result = await page.evaluate(([runToml, dataText]) =>
      window.tinytune.send('train', { runToml, dataName: 'eval.jsonl', dataText }), [toml(RUN), readFileSync(DATA, 'utf8')]);
    return result.losses;
  } finally {
    await context.close();
  }
}

test('the same run config gives the same first 3 losses in the browser (WebGPU, CPU) and natively', async () => {
  const native = nativeLosses();
  assert.equal(native.length, 3);
  assert.ok(native[2] < native[0], `the loss falls natively: ${native}`);
  for (const [label, query] of [['WebGPU', '?gpu=on&model=none'], ['wasm CPU', '?gpu=off&model=none']]) {
    const losses = await browserLosses(query);
    assert.equal(losses.length, 3, label);
    losses.forEach((l, i) => assert.ok(Math.abs(l - native[i]) < TOLERANCE, `${label} step ${i + 1}: ${l} vs native ${native[i]}`));
  }
});
