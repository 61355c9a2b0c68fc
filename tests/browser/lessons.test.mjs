// The course in the page, on its CPU engine: every lesson's experiment run at a reduced size
// (2 steps of batch 2 a run, 1 test example a metric) on the built-in model, each finding its measured
// result shown with what to notice; the runs those experiments made fill the Runs table, overlay
// the loss chart, export as the same CSV and survive a reload; the memory calculator; and the
// page's first visit, which folds the advanced sections. With SCREENSHOT_DIR set it runs the DPO
// lesson at the page's own size (30 steps of batch 8, 10 test pairs) and saves the lesson, the
// runs table and the calculator at 1280×800 (docs/screenshots/ holds the committed ones).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });
const SHOTS = process.env.SCREENSHOT_DIR;
async function shot(page, name, selector) {
  if (!SHOTS) return;
  await page.locator(selector).evaluate((e) => e.scrollIntoView({ block: 'start' }));
  await page.evaluate(() => window.scrollBy(0, -40)); // below the sticky contents bar
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}
const LESSONS = ['prompting', 'cpt-vs-sft', 'methods', 'rank', 'targets', 'memory', 'precision', 'forgetting', 'dpo', 'merging', 'serving'];

test('every lesson runs its experiment and shows the measured result', async () => {
  const context = await env.browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  try {
    await page.goto(env.server.base + '?gpu=off', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 180000 });
    const listed = await page.$$eval('#lesson-list button', (b) => b.map((x) => x.dataset.lesson));
    assert.deepEqual(listed, LESSONS);
    const results = {};
    for (const id of LESSONS) {
      const started = Date.now();
      await page.click(`#lesson-list button[data-lesson="${id}"]`);
      const full = SHOTS && id === 'dpo';
      for (const [sel, small, big] of [['#lesson-steps', '2', '30'], ['#lesson-batch', '2', '8'], ['#lesson-limit', '1', '10']]) await page.fill(sel, full ? big : small);
      assert.ok((await page.textContent('#lesson-text')).length > 80, `${id} explains itself`);
      await page.getByRole('button', { name: 'Run this experiment' }).click();
      await page.waitForSelector('#lesson-status:is([data-state=done],[data-state=error])', { timeout: 600000 });
      assert.equal(await page.getAttribute('#lesson-status', 'data-state'), 'done', `${id}: ${await page.textContent('#lesson-status')}`);
      const rows = await page.$$eval(`#lesson-result table[data-lesson="${id}"] tr`, (trs) => trs.map((tr) => [tr.dataset.measure, Number(tr.querySelector('td').dataset.value)]));
      assert.ok(rows.length >= 2, `${id}: ${JSON.stringify(rows)}`);
      for (const [measure, value] of rows) assert.ok(Number.isFinite(value), `${id}: ${measure} is measured (${value})`);
      assert.match(await page.textContent('#lesson-notice'), /^What to notice: .{40,}/);
      results[id] = { rows, seconds: (Date.now() - started) / 1000 };
      if (full) await shot(page, 'lesson', '#lessons-section');
    }
    console.log(JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.seconds]))));
    const value = (id, measure) => {
      const row = results[id].rows.find(([m]) => m === measure);
      assert.ok(row, `${id} measures "${measure}": ${JSON.stringify(results[id].rows)}`);
      return row[1];
    };
    // What the lessons must show, whatever the numbers: the loss mask, the method sizes, the 65B claim.
    assert.equal(value('cpt-vs-sft', 'story corpus (.txt): tokens that carry the loss') > 0.95, true);
    assert.ok(value('cpt-vs-sft', 'json task (prompt/completion): tokens that carry the loss') < 0.6);
    assert.ok(value('methods', 'lora: trainable parameters') < value('methods', 'full: trainable parameters') / 10);
    assert.ok(value('methods', 'qlora: measured memory') > 0);
    assert.ok(value('memory', 'QLoRA, bf16 activations, checkpointing') < 48e9);
    assert.ok(value('memory', 'QLoRA, f32 activations, everything kept') > 48e9);
    assert.ok(value('precision', 'nf4_dq: 4.127 bits, held-out loss') > 0);

    // The runs the lessons made: in the table, on the chart, in the CSV, after a reload.
    const table = await page.$$eval('#runs-table tbody tr', (trs) => trs.map((tr) => Object.fromEntries([...tr.querySelectorAll('[data-key]')].map((c) => [c.dataset.key, c.textContent]))));
    assert.ok(table.length >= 17, `${table.length} runs`);
    assert.ok(table.some((r) => r.method === 'dpo') && table.some((r) => r.method === 'full') && table.some((r) => r.method === 'qlora'));
    const dpoRow = table.find((r) => r.method === 'dpo');
    assert.match(dpoRow.metric, /^prefers the chosen: [\d.]+% → [\d.]+%$/, 'the DPO run carries its task metric, before and after');
    await shot(page, 'runs', '#loss-section');
    const overlays = await page.$$eval('#loss-chart polyline.run', (p) => p.length);
    assert.equal(overlays, table.length - 1, 'every ticked run but the last (drawn as "train") lies over the chart');
    await page.locator('#runs-table tbody tr').first().locator('input[type=checkbox]').uncheck();
    assert.equal(await page.$$eval('#loss-chart polyline.run', (p) => p.length), table.length - 2);
    const download = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Export CSV' }).click();
    const csv = readFileSync(await (await download).path(), 'utf8').trim().split('\n');
    assert.equal(csv.length, table.length + 1);
    assert.match(csv[0], /^run,method,data,trainable parameters,measured memory \(bytes\),time \(s\),steps,final train loss,final valid loss,task metric$/);
    const lastCsv = csv.at(-1).split(',');
    assert.equal(Number(lastCsv[7]).toFixed(4), table.at(-1).trainLoss, 'the CSV holds the table\'s figures');
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#runs-table:not([hidden])');
    assert.equal(await page.$$eval('#runs-table tbody tr', (t) => t.length), table.length);
  } finally {
    await context.close();
  }
});

test('a first visit folds the advanced sections; headings and the contents unfold them', async () => {
  const context = await env.browser.newContext({ folded: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  try {
    await page.goto(env.server.base + '?gpu=off&model=none', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#lessons-section > .fold');
    assert.equal(await page.isVisible('#lesson-list'), true);
    assert.equal(await page.isVisible('#precision-matrix'), false, 'Precision is folded on a first visit');
    await page.click('#precision-section > .fold');
    assert.equal(await page.isVisible('#precision-matrix'), true);
    assert.equal(await page.isVisible('#calc-run'), false);
    await page.click('#toc a[href="#calculator-section"]');
    assert.equal(await page.isVisible('#calc-run'), true);
    assert.equal(new URL(page.url()).hash, '', 'the contents do not touch the settings in the address');
    // The calculator, on a pasted config.json.
    await page.selectOption('#calc-preset', 'paste');
    await page.fill('#calc-config', readFileSync('www/assets/builtin/model/config.json', 'utf8'));
    await page.fill('#calc-batch', '8');
    await page.fill('#calc-seq', '128');
    await page.fill('#calc-rank', '8');
    await page.click('#calc-run');
    await page.waitForSelector('#calc-table:not([hidden]) tbody tr');
    const methods = await page.$$eval('#calc-table tbody tr', (t) => t.map((r) => r.dataset.method));
    assert.deepEqual(methods, ['full', 'LoRA', 'QLoRA (NF4 base)']);
    assert.match(await page.textContent('#calc-formula'), /weights = frozen params/);
    if (SHOTS) {
      await page.selectOption('#calc-preset', 'llama-2-65b');
      await page.fill('#calc-batch', '1');
      await page.fill('#calc-seq', '512');
      await page.fill('#calc-rank', '16');
      await page.check('#calc-bf16');
      await page.check('#calc-ckpt');
      await page.click('#calc-run');
      await page.waitForFunction(() => /bf16/.test(document.querySelector('#calc-status').textContent));
      await shot(page, 'calculator', '#calculator-section');
    }
    // The choice is kept: Precision stays open after a reload.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#lessons-section > .fold');
    assert.equal(await page.isVisible('#precision-matrix'), true);
    assert.equal(await page.isVisible('#saved-list'), false);
  } finally {
    await context.close();
  }
});
