// GGUF files in the page, on its CPU engine: one offered by `tinytune serve` from the machine's
// model folder (here the fixtures' folder) and one picked as a file, each loaded and checked
// against transformers' numbers (tests/fixtures/make_gguf_fixtures.py).
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
    const { report } = await send(page, 'evalLoss', { texts, seqLen: 1024 });
    const want = reference.models['tiny-llama-Q4_1.gguf'].eval;
    assert.equal(report.tokens, want.tokens);
    assert.ok(Math.abs(report.loss - want.loss) < 1e-4, `eval loss ${report.loss} vs transformers ${want.loss}`);
  } finally {
    await page.close();
  }
});
