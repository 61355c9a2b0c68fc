// The playground end to end on the real page, on its CPU engine: the built-in model loads, a built-in
// task is picked, 20 steps train and the loss falls, the A / B / ΔW heatmaps and the spectrum
// are drawn, the memory ledger shows predicted and measured bytes, the exported adapter gives
// natively (tinytune eval --valid-of) the valid loss the page showed, and the adapter is still
// listed after a reload. With SCREENSHOT_DIR set it saves the page at rest, mid-training and
// after training at 1280×800 (docs/screenshots/ holds the committed ones).
//
// The flow runs on the page's CPU engine (burn flex in wasm): SwiftShader, the software WebGPU
// here, took 8 minutes for these 20 steps, while the WebGPU path itself is covered by smaller
// runs (train.test.mjs, training-ui.test.mjs, qlora.test.mjs). The run stays small: batch 1, 64
// tokens, 4 held-out examples.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { scratchDir, serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });
const SHOTS = process.env.SCREENSHOT_DIR;
// The page's valid loss (wasm CPU, f32) against the CLI's (native CPU, f32) on the same 4 examples.
const VALID_TOLERANCE = 1e-3;

const tomlValue = (toml, key) => JSON.parse(new RegExp(`^${key} = (.*)$`, 'm').exec(toml)[1]);

async function shot(page, name, selector) {
  if (!SHOTS) return;
  if (selector) await page.locator(selector).evaluate((e) => e.scrollIntoView({ block: 'start' }));
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

// Canvas pixels that are drawn and not (near) white: a blank or all-zero heatmap has none.
const inkedPixels = (page, id) => page.$eval(id, (c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && Math.min(d[i], d[i + 1], d[i + 2]) < 235) n++;
  return n;
});

test('train on a built-in task in the page, watch it, export it, and find it again after a reload', async () => {
  const context = await env.browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  try {
    // Settings ride in the address; the task is then picked with the data picker.
    await page.goto(env.server.base + '?gpu=off#steps=20&batchSize=1&seqLen=64&evalEvery=10&validFraction=0.002&lr=0.004&seed=3', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-status:is([data-state=ready],[data-state=error])', { timeout: 180000 });
    assert.equal(await page.getAttribute('#model-status', 'data-state'), 'ready', await page.textContent('#error'));
    await page.selectOption('#data-source', 'sql');
    await page.waitForFunction(() => /"sql"/.test(document.querySelector('#data-status').textContent));
    await page.waitForSelector('#data-preview .tok.trained');
    assert.match(page.url(), /task=sql/, 'the choice is in the address');
    await shot(page, 'rest', '#data-section');

    await page.getByRole('button', { name: 'Train', exact: true }).click();
    await page.waitForFunction(() => /step 1[0-9]\/20/.test(document.querySelector('#train-stats').textContent), null, { timeout: 600000 });
    await shot(page, 'mid-training', '#loss-section');
    await page.waitForSelector('#train-status:is([data-state=done],[data-state=error])', { timeout: 600000 });
    assert.equal(await page.getAttribute('#train-status', 'data-state'), 'done', await page.textContent('#error'));

    const losses = JSON.parse(await page.getAttribute('#loss-chart polyline.train', 'data-values'));
    assert.equal(losses.length, 20);
    assert.ok(losses.at(-1) < losses[0], `loss must fall: ${losses[0]} → ${losses.at(-1)}`);
    const pageValid = Number(await page.getAttribute('#loss-chart', 'data-last-valid'));
    assert.ok(Number.isFinite(pageValid), 'a valid loss was shown');

    for (const id of ['#heat-a', '#heat-b', '#heat-delta']) {
      assert.ok(await inkedPixels(page, id) > 0, `${id} has drawn, non-blank pixels`);
    }
    const sigma = JSON.parse(await page.getAttribute('#spectrum-chart g.spectrum-selected', 'data-values'));
    assert.equal(sigma.length, 8, 'r = 8 singular values');
    assert.ok(sigma[0] > 0 && sigma.every((s, i) => i === 0 || s <= sigma[i - 1] + 1e-12), `descending and not all zero: ${sigma}`);
    assert.ok(await page.$$eval('#rank-chart polyline', (ps) => ps.length) > 0, 'effective rank over the steps');

    const rows = await page.$$eval('#memory-ledger g.ledger-row', (gs) => gs.map((g) => ({ label: g.dataset.label, total: Number(g.dataset.total) })));
    const predicted = rows.find((r) => /predicted/.test(r.label));
    const measured = rows.find((r) => /measured/.test(r.label));
    assert.ok(predicted && predicted.total > 0, JSON.stringify(rows));
    assert.ok(measured && measured.total > 0, JSON.stringify(rows));
    assert.match(await page.textContent('#memory-ledger .formula'), /activations = B·T·/);
    await shot(page, 'after-training', '#matrices-section');
    await shot(page, 'memory', '#memory-section');

    // Export the run config and the adapter; the CLI scores the run's held-out split.
    const dir = scratchDir('tinytune-playground-');
    const [configDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export run config' }).click()]);
    const toml = readFileSync(await configDownload.path(), 'utf8');
    writeFileSync(join(dir, 'run.toml'), toml);
    const downloads = [];
    page.on('download', (d) => downloads.push(d));
    await page.getByRole('button', { name: 'Export adapter' }).click();
    for (let i = 0; i < 100 && downloads.length < 2; i++) await page.waitForTimeout(100);
    assert.deepEqual(downloads.map((d) => d.suggestedFilename()).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const adapterDir = join(dir, 'adapter');
    execFileSync('mkdir', [adapterDir]);
    for (const d of downloads) await d.saveAs(join(adapterDir, d.suggestedFilename()));
    symlinkSync(resolve('www/assets/builtin/tasks/sql/train.jsonl'), join(dir, tomlValue(toml, 'data')));
    const out = execFileSync(resolve(process.env.TINYTUNE_BIN), ['eval', '--device', 'cpu', '--model', resolve('www/assets/builtin/model'),
      '--adapter', adapterDir, '--valid-of', 'run.toml', '--json'], { cwd: dir, encoding: 'utf8' });
    const native = JSON.parse(out);
    assert.equal(native.examples, 4);
    assert.ok(Math.abs(native.loss - pageValid) < VALID_TOLERANCE, `native valid loss ${native.loss} vs page ${pageValid}`);
    console.log(`# valid loss: page (wasm CPU) ${pageValid.toFixed(6)}, tinytune eval (native CPU) ${native.loss.toFixed(6)}`);

    // Kept in the browser: after a reload the adapter is still listed.
    await page.waitForSelector('#saved-list li[data-kind=adapter]');
    await page.reload();
    await page.waitForSelector('#saved-list li[data-kind=adapter]', { timeout: 60000 });
    assert.match(await page.textContent('#saved-list'), /adapter: sql r8/);
  } finally {
    await context.close();
  }
});
