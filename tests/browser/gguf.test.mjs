// GGUF files in the page, on its CPU engine: one offered by `tinytune serve` from the machine's
// model folder (here the fixtures' folder) and one picked as a file, each loaded and checked
// against transformers' numbers (tests/fixtures/make_gguf_fixtures.py); the Q8_0 file's weights
// kept in 8-bit codes, the Q4_1 file's in 4 bits, and the page's check of its 4-bit kernels on the
// CPU engine.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });
const reference = JSON.parse(readFileSync('tests/fixtures/gguf/reference.json', 'utf8'));
const texts = readFileSync('tests/fixtures/corpus/eval.jsonl', 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l).text);
const send = (page, cmd, args) => page.evaluate(([c, a]) => window.tinytune.send(c, a), [cmd, args]);

test('a GGUF model from this machine and a picked GGUF file load, generate and score as transformers does', async () => {
  const page = await env.browser.newPage();
  try {
    await page.goto(env.server.base + '?gpu=off&model=none', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#check-status[data-state=done]', { timeout: 120000 });

    // Offered by the server: the list, then Load.
    await page.waitForSelector('#local-models:not([hidden])', { timeout: 30000 });
    const offered = await page.$$eval('#local-model option', (os) => os.map((o) => o.value));
    assert.ok(offered.includes('tiny-llama-Q8_0.gguf'), offered.join(', '));
    await page.selectOption('#local-model', 'tiny-llama-Q8_0.gguf');
    await page.click('#load-local-model');
    await page.waitForSelector('#model-status:is([data-state=ready],[data-state=error])', { timeout: 60000 });
    assert.equal(await page.getAttribute('#model-status', 'data-state'), 'ready', await page.textContent('#error'));
    assert.match(await page.textContent('#model-summary'), /llama/);
    // Its linear weights and token embedding stay in Q8_0's 8-bit codes (the CPU engine's 8-bit kernel).
    assert.match(await page.textContent('#model-summary'), /linear weights in q8_0/);
    assert.match(await page.textContent('#model-summary'), /kept in q8_0/);
    const q8 = reference.models['tiny-llama-Q8_0.gguf'];
    for (const g of q8.greedy) {
      const done = await send(page, 'generate', {
        prompt: g.prompt,
        sampling: { max_new_tokens: reference.new_tokens, temperature: 0, top_k: 0, top_p: 1, seed: 0, stop_at_eos: true },
      });
      assert.deepEqual(done.ids, g.new_ids, `greedy after ${g.prompt}`);
    }

    // Picked as a file (the status is marked first, so "ready" below is the new model's).
    await page.evaluate(() => { document.querySelector('#model-status').dataset.state = 'picking'; });
    await page.setInputFiles('#model-files', 'tests/fixtures/gguf/tiny-llama-Q4_1.gguf');
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 60000 });
    // Its linear weights stay in Q4_1 (the page's 4-bit kernels, with wasm SIMD lookups).
    assert.match(await page.textContent('#model-summary'), /linear weights in q4_1/);
    const { report } = await send(page, 'evalLoss', { texts, seqLen: 1024 });
    const q41 = reference.models['tiny-llama-Q4_1.gguf'];
    const want = q41.eval;
    assert.equal(report.tokens, want.tokens);
    assert.ok(Math.abs(report.loss - want.loss) < 1e-4, `eval loss ${report.loss} vs transformers ${want.loss}`);
    for (const g of q41.greedy) {
      const done = await send(page, 'generate', {
        prompt: g.prompt,
        sampling: { max_new_tokens: reference.new_tokens, temperature: 0, top_k: 0, top_p: 1, seed: 0, stop_at_eos: true },
      });
      assert.deepEqual(done.ids, g.new_ids, `Q4_1 greedy after ${g.prompt}`);
    }

    // The page's own check of those kernels on its CPU engine: dequantization bit for bit, the
    // fused multiply (NF4 and Q4_1) within 1e-5.
    await page.click('#q4-check');
    await page.waitForSelector('#q4-status:is([data-state=done],[data-state=failed],[data-state=error])', { timeout: 120000 });
    const q4 = await page.textContent('#q4-status');
    assert.equal(await page.getAttribute('#q4-status', 'data-state'), 'done', q4);
    assert.match(q4, /4-bit path on the CPU: dequantization equals the CPU path bit for bit on 15 matrices/);
  } finally {
    await page.close();
  }
});
