// The rest of the playground's flow, on the page's CPU engine (?gpu=off: the WebGPU path is
// covered by playground.test.mjs, and SwiftShader is slow): Stop, reload and Resume from the
// checkpoint kept in the browser; base vs adapter comparison; the task metric before and after;
// recovery after the engine is lost; importing a PEFT adapter; and a narrow screen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });

const stepOf = async (page) => Number((/step (\d+)\//.exec(await page.textContent('#train-stats')) || [])[1] || 0);

test('stop, reload and resume; compare; task metric; the engine lost and back', async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  try {
    const url = env.server.base + '?gpu=off#steps=24&batchSize=2&seqLen=64&evalEvery=0&maxNewTokens=6&temperature=0&taskLimit=2';
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });
    await page.waitForFunction(() => !document.querySelector('#train').disabled, null, { timeout: 60000 });
    await page.getByRole('button', { name: 'Train', exact: true }).click();
    await page.waitForFunction(() => /step 1[2-9]\/24/.test(document.querySelector('#train-stats').textContent), null, { timeout: 300000 });
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    await page.waitForSelector('#train-status[data-state=stopped]', { timeout: 120000 });
    const stoppedAt = await stepOf(page);
    assert.ok(stoppedAt >= 12 && stoppedAt < 24, `stopped at ${stoppedAt}`);
    await page.waitForSelector('#saved-list li[data-kind=checkpoint]');

    // A reload keeps the checkpoint and offers to resume from exactly where it stopped.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#resume-offer:not([hidden])', { timeout: 60000 });
    assert.match(await page.textContent('#resume-offer'), new RegExp(`stopped at step ${stoppedAt} of 24`));
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });
    await page.waitForFunction(() => !document.querySelector('#resume-train').disabled, null, { timeout: 60000 });
    await page.getByRole('button', { name: 'Resume', exact: true }).click();
    await page.waitForFunction(() => /continuing at step/.test(document.querySelector('#train-status').textContent), null, { timeout: 60000 });
    assert.match(await page.textContent('#train-status'), new RegExp(`continuing at step ${stoppedAt} of\\s+24`));
    await page.waitForSelector('#train-status:is([data-state=done],[data-state=error])', { timeout: 300000 });
    assert.equal(await page.getAttribute('#train-status', 'data-state'), 'done', await page.textContent('#error'));
    // The chart holds the steps before the reload and after it, once each.
    assert.equal(JSON.parse(await page.getAttribute('#loss-chart polyline.train', 'data-values')).length, 24);
    await page.waitForSelector('#saved-list li[data-kind=adapter]');
    assert.match(await page.textContent('#saved-list'), /checkpoint: step 24 of 24 \(finished\)/);

    // Base vs adapter on the same prompt and seed.
    await page.getByRole('button', { name: 'Compare', exact: true }).click();
    await page.waitForSelector('#compare-adapter[data-state=done]', { timeout: 120000 });
    const [base, adapted] = [await page.textContent('#compare-base'), await page.textContent('#compare-adapter')];
    assert.ok(base.length > 0 && adapted.length > 0, `${base} | ${adapted}`);
    assert.notEqual(base, adapted, 'the adapter changes the greedy continuation');

    // The task metric on the first 2 test examples, before and after.
    await page.getByRole('button', { name: 'Run task metric' }).click();
    await page.waitForSelector('#metric-table:not([hidden])', { timeout: 300000 });
    const cells = await page.$$eval('#metric-table tbody tr', (rs) => rs.map((r) => [r.dataset.kind, r.querySelector('.before').textContent, r.querySelector('.after').textContent]));
    assert.deepEqual(cells.map((c) => c[0]), ['json_keys', 'json_values']);
    for (const [, b, a] of cells) assert.ok(/%$/.test(b) && /%$/.test(a), `${b} ${a}`);

    // The engine lost (as a lost GPU device ends it): the page says so, starts a fresh engine,
    // rebuilds the model, and everything works again.
    await page.evaluate(() => window.tinytune.recover('simulated device loss'));
    assert.match(await page.textContent('#error'), /engine stopped: simulated device loss/);
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });
    await page.waitForFunction(() => !document.querySelector('#train').disabled, null, { timeout: 60000 });
    const again = await page.evaluate(() => window.tinytune.send('encode', { text: 'hello' }));
    assert.ok(again.ids.length > 0);
  } finally {
    await context.close();
  }
});

test('import a PEFT adapter, see its matrices, and use the page on a narrow screen', async () => {
  const context = await env.browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  try {
    await page.goto(env.server.base + '?gpu=off&model=none', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#check-status[data-state=done]', { timeout: 120000 });
    const dir = 'tests/fixtures/tiny-llama';
    const files = readdirSync(dir).filter((f) => /\.(json|safetensors)$/.test(f) && !['reference.json', 'logits.safetensors'].includes(f));
    await page.setInputFiles('#model-files', files.map((f) => join(dir, f)));
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });

    // A wrong pick says what is missing.
    await page.setInputFiles('#import-adapter', [join(dir, 'adapter/adapter_config.json')]);
    assert.match(await page.textContent('#error'), /both of its files/);
    await page.setInputFiles('#import-adapter', ['adapter_config.json', 'adapter_model.safetensors'].map((f) => join(dir, 'adapter', f)));
    await page.waitForFunction(() => /Adapter .* loaded: rank/.test(document.querySelector('#train-status').textContent), null, { timeout: 60000 });
    await page.waitForFunction(() => Number(document.querySelector('#heat-a').dataset.rows) > 0, null, { timeout: 60000 });
    const sigma = JSON.parse(await page.getAttribute('#spectrum-chart g.spectrum-selected', 'data-values'));
    assert.ok(sigma[0] > 0, 'the imported adapter has a non-zero update');
    await page.waitForSelector('#saved-list li[data-kind=adapter]');

    // The controls and sections have the names a screen reader (and a teacher) uses.
    for (const name of ['Train', 'Stop', 'Resume', 'Generate', 'Export adapter', 'Import adapter', 'Export run config']) {
      assert.equal(await page.getByRole('button', { name, exact: true }).count(), 1, `button ${name}`);
    }
    for (const name of ['Model', 'Data', 'Training', 'Loss', 'Low-rank matrices', 'Spectrum', 'Memory', 'Compare']) {
      assert.equal(await page.getByRole('heading', { name, exact: true }).count(), 1, `heading ${name}`);
    }

    // Nothing wider than the screen.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a 390px screen`);
  } finally {
    await context.close();
  }
});
