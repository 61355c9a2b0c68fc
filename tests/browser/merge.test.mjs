// The Merge section on the page's CPU engine: train two adapters on two built-in tasks, merge
// them with TIES, see the sign conflicts, elected signs and kept values drawn, fill the
// interference table, export the merge as a PEFT adapter that the CLI loads, and measure the
// four ways of serving the two adapters.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { scratchDir, serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });

const inked = (page, selector) => page.$eval(selector, (c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && Math.min(d[i], d[i + 1], d[i + 2]) < 235) n++;
  return n;
});

test('train two adapters, merge them with TIES, measure interference, export the merge', async () => {
  const context = await env.browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  try {
    await page.goto(env.server.base + '?gpu=off#steps=3&batchSize=2&seqLen=64&evalEvery=0&rank=4&alpha=8&lr=0.01', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 180000 });
    // Different seeds: the adapters start from different A factors, as independent runs do.
    for (const [task, seed] of [['json', '1'], ['sql', '2']]) {
      await page.fill('#train-seed', seed);
      await page.selectOption('#data-source', task);
      await page.waitForFunction((t) => document.querySelector('#data-status').textContent.includes(`"${t}"`), task);
      await page.getByRole('button', { name: 'Train', exact: true }).click();
      await page.waitForSelector('#train-status:is([data-state=done],[data-state=error])', { timeout: 120000 });
      assert.equal(await page.getAttribute('#train-status', 'data-state'), 'done', await page.textContent('#error'));
      await page.waitForSelector(`#merge-adapters .merge-row:has-text("task ${task}")`, { timeout: 30000 });
    }

    // Both adapters, one with a negative weight, merged with TIES.
    const rows = page.locator('#merge-adapters .merge-row');
    assert.equal(await rows.count(), 2);
    for (let i = 0; i < 2; i++) await rows.nth(i).locator('input[type=checkbox]').check();
    await rows.nth(1).locator('.merge-weight').fill('-0.5');
    await page.selectOption('#merge-method', 'ties');
    await page.getByRole('button', { name: 'Merge', exact: true }).click();
    await page.waitForFunction(() => /Merged 2 adapters with ties into rank 4/.test(document.querySelector('#merge-status').textContent), null, { timeout: 60000 });
    for (const view of ['sign conflicts', 'elected sign', 'values kept']) {
      const canvas = `#merge-views canvas[data-view^="${view}"]`;
      await page.waitForSelector(canvas);
      assert.ok(await inked(page, canvas) > 0, `${view} is drawn`);
    }
    // Another module redraws the views for it.
    const modules = await page.$$eval('#merge-module option', (o) => o.map((x) => x.value));
    assert.ok(modules.length >= 7, modules.join(', '));
    await page.selectOption('#merge-module', modules[1]);
    await page.waitForSelector('#merge-views canvas[data-view^="sign conflicts"]');

    // The SVD types show the spectrum with the cut.
    await page.selectOption('#merge-method', 'ties_svd');
    await page.getByRole('button', { name: 'Merge', exact: true }).click();
    await page.waitForFunction(() => /with ties_svd/.test(document.querySelector('#merge-status').textContent), null, { timeout: 60000 });
    await page.waitForSelector('#merge-spectrum line.merge-cut[data-cut="4"]', { state: 'attached' });
    assert.ok(await page.$$eval('#merge-spectrum rect.spectrum-bar', (r) => r.length) === 4);

    // Interference: base, each source and the merge on both tasks.
    await page.selectOption('#merge-method', 'ties');
    await page.getByRole('button', { name: 'Merge', exact: true }).click();
    await page.waitForFunction(() => /with ties into/.test(document.querySelector('#merge-status').textContent), null, { timeout: 60000 });
    await page.fill('#merge-limit', '1');
    await page.getByRole('button', { name: 'Measure interference' }).click();
    await page.waitForFunction(() => /Interference measured/.test(document.querySelector('#merge-status').textContent), null, { timeout: 300000 });
    const cells = await page.$$eval('#merge-table tbody td[data-column]', (tds) => tds.map((td) => ({ col: td.dataset.column, v: td.dataset.value, text: td.textContent })));
    assert.equal(cells.length, 2 * 2 * 4, JSON.stringify(cells)); // 2 tasks × 2 measures × (base, 2 sources, merged)
    for (const c of cells) assert.ok(Number.isFinite(Number(c.v)), `a filled cell: ${JSON.stringify(c)}`);
    const losses = await page.$$eval('#merge-table tr[data-measure="held-out loss"] td[data-column]', (tds) => tds.map((td) => Number(td.dataset.value)));
    assert.ok(new Set(losses.map((l) => l.toFixed(4))).size > 1, `the adapters change the held-out loss: ${losses}`);

    // Export: PEFT files the CLI loads over the built-in model.
    const downloads = [];
    page.on('download', (d) => downloads.push(d));
    await page.getByRole('button', { name: 'Export merged adapter' }).click();
    for (let i = 0; i < 50 && downloads.length < 2; i++) await page.waitForTimeout(100);
    assert.deepEqual(downloads.map((d) => d.suggestedFilename()).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const dir = scratchDir('tinytune-merged-');
    for (const d of downloads) await d.saveAs(join(dir, d.suggestedFilename()));
    const out = execFileSync(resolve(process.env.TINYTUNE_BIN), ['eval', '--device', 'cpu', '--model', resolve('www/assets/builtin/model'),
      '--adapter', dir, '--data', resolve('tests/fixtures/corpus/eval.jsonl'), '--json'], { encoding: 'utf8' });
    assert.ok(Number.isFinite(JSON.parse(out).loss));

    // Serving the two adapters four ways on this device.
    await page.fill('#serving-prompts', 'Once upon a time,\nThe old man');
    await page.fill('#serving-tokens', '4');
    await page.getByRole('button', { name: 'Measure serving' }).click();
    await page.waitForSelector('#serving-table:not([hidden]) tbody tr', { timeout: 120000 });
    const modes = await page.$$eval('#serving-table tbody tr', (trs) => trs.map((tr) => ({ mode: tr.dataset.mode, tps: Number(tr.cells[1].dataset.value), mem: Number(tr.cells[3].dataset.value) })));
    assert.deepEqual(modes.map((x) => x.mode), ['merged weights (one model per adapter)', 'base + separate adapter', 'multi-LoRA batch', 'swapping adapters']);
    for (const x of modes) assert.ok(x.tps > 0 && x.mem > 0, JSON.stringify(x));
  } finally {
    await context.close();
  }
});
