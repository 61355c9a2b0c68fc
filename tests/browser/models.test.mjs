// Hugging Face parity in the browser: the fixture models are loaded through the page's own file
// picker, then evaluated on WebGPU and on the wasm CPU path against transformers' numbers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { serverAndBrowser } from './harness.mjs';

const FIXTURES = 'tests/fixtures';
const MODELS = ['tiny-gpt2', 'tiny-llama', 'tiny-qwen2', 'tiny-llama-bf16'];
const TOL = 1e-4;

const env = serverAndBrowser({ before, after });

const evalTexts = readFileSync(join(FIXTURES, 'corpus/eval.jsonl'), 'utf8')
  .split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l).text);

// logits.safetensors: 8-byte header length, JSON header, then little-endian f32 data.
function readSafetensors(path) {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [a, b] = info.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    out[name] = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  }
  return out;
}

async function loadInPage(page, model) {
  const dir = join(FIXTURES, model);
  const files = readdirSync(dir).filter((f) => /\.(json|safetensors)$/.test(f) && f !== 'reference.json' && f !== 'logits.safetensors');
  await page.setInputFiles('#model-files', files.map((f) => join(dir, f)));
  await page.waitForSelector('#model-status:is([data-state=ready],[data-state=error])', { timeout: 120000 });
  const err = await page.locator('#error').isVisible() ? await page.textContent('#error') : null;
  assert.equal(err, null, `${model}: ${err}`);
  assert.equal(await page.getAttribute('#model-status', 'data-state'), 'ready');
}

const send = (page, cmd, args) => page.evaluate(([c, a]) => window.tinytune.send(c, a), [cmd, args]);

for (const [label, query, kind] of [['WebGPU', '?gpu=on&model=none', 'wgpu'], ['the wasm CPU path', '?gpu=off&model=none', 'cpu']]) {
  test(`models match transformers on ${label}: eval loss, logits and greedy text`, async () => {
    const context = await env.browser.newContext();
    const page = await context.newPage();
    await page.goto(env.server.base + query, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#check-status[data-state=done]', { timeout: 180000 });
    const device = JSON.parse(await page.textContent('#device-json'));
    assert.equal(device.device.kind, kind);
    try {
      // SwiftShader is slow (a greedy token costs about a second): on WebGPU, one model of each
      // family and one greedy continuation each; the CPU path checks them all.
      for (const model of kind === 'wgpu' ? ['tiny-gpt2', 'tiny-llama'] : MODELS) {
        const ref = JSON.parse(readFileSync(join(FIXTURES, model, 'reference.json'), 'utf8'));
        await loadInPage(page, model);
        const summary = await page.textContent('#model-summary');
        assert.match(summary, new RegExp(ref.architecture === 'GPT2LMHeadModel' ? 'gpt2' : '(llama|qwen2)'));

        const { report } = await send(page, 'evalLoss', { texts: evalTexts, seqLen: 1024 });
        assert.equal(report.tokens, ref.eval.tokens, `${model}: tokens`);
        assert.ok(Math.abs(report.loss - ref.eval.loss) < TOL, `${model}: loss ${report.loss} vs ${ref.eval.loss}`);

        const logits = readSafetensors(join(FIXTURES, model, ref.logits.file));
        for (const p of ref.logits.prompts) {
          const { ids } = await send(page, 'encode', { text: p.text });
          assert.deepEqual(ids, p.ids, `${model}: ids of ${p.text}`);
          const { values } = await send(page, 'logits', { ids: p.ids });
          const want = logits[p.tensor];
          assert.equal(values.length, want.length);
          let d = 0;
          for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(values[i] - want[i]));
          assert.ok(d <= TOL, `${model} ${p.text}: logits max |Δ| ${d}`);
        }

        for (const g of kind === 'wgpu' ? ref.greedy.slice(0, 1) : ref.greedy) {
          const want = g.stopped_at_eos ? g.new_ids.slice(0, -1) : g.new_ids;
          const done = await send(page, 'generate', {
            prompt: g.prompt,
            sampling: { max_new_tokens: g.max_new_tokens, temperature: 0, top_k: 0, top_p: 1, seed: 0, stop_at_eos: true },
          });
          assert.deepEqual(done.ids, want, `${model}: greedy after ${JSON.stringify(g.prompt)}`);
        }
      }
    } finally {
      await context.close();
    }
  });
}

test('generation streams into the page with the sampling controls', async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  await page.goto(env.server.base + '?model=none', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#check-status[data-state=done]', { timeout: 180000 });
  try {
    await loadInPage(page, 'tiny-llama');
    const ref = JSON.parse(readFileSync(join(FIXTURES, 'tiny-llama', 'reference.json'), 'utf8'));
    const g = ref.greedy[0];
    await page.fill('#prompt', g.prompt);
    await page.fill('#temperature', '0');
    await page.fill('#max-new-tokens', String(g.max_new_tokens));
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.waitForSelector('#generation[data-state=done]', { timeout: 60000 });
    assert.equal(await page.textContent('#generation'), g.prompt + g.text);
    assert.match(await page.textContent('#generate-stats'), /tokens\/s/);
  } finally {
    await context.close();
  }
});

test('a broken model file gets a clear error in the page', async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  await page.goto(env.server.base + '?gpu=off&model=none', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#check-status[data-state=done]', { timeout: 180000 });
  try {
    const dir = join(FIXTURES, 'tiny-llama');
    const weights = readFileSync(join(dir, 'model.safetensors'));
    await page.setInputFiles('#model-files', [
      { name: 'config.json', mimeType: 'application/json', buffer: readFileSync(join(dir, 'config.json')) },
      { name: 'tokenizer.json', mimeType: 'application/json', buffer: readFileSync(join(dir, 'tokenizer.json')) },
      { name: 'model.safetensors', mimeType: 'application/octet-stream', buffer: weights.subarray(0, weights.length >> 1) },
    ]);
    await page.waitForSelector('#model-status[data-state=error]', { timeout: 60000 });
    assert.match(await page.textContent('#error'), /model\.safetensors is damaged or truncated/);
  } finally {
    await context.close();
  }
});
