// Training from the page's own controls: pick data, press Train, watch the loss chart, export
// the run config (which `tinytune train --config` accepts unchanged and reproduces) and the
// adapter (PEFT files). On the page's CPU engine: train.test.mjs holds WebGPU to the same losses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { scratchDir, serverAndBrowser } from './harness.mjs';

const MODEL = 'tests/fixtures/tiny-llama';
const DATA = 'tests/fixtures/corpus/eval.jsonl';

const env = serverAndBrowser({ before, after });

const tomlValue = (toml, key) => JSON.parse(new RegExp(`^${key} = (.*)$`, 'm').exec(toml)[1]);

test('the Train button trains, the chart fills, and the exports work', async () => {
  const context = await env.browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  try {
    await page.goto(env.server.base + '?gpu=off&model=none', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#check-status[data-state=done]', { timeout: 180000 });
    const files = readdirSync(MODEL).filter((f) => /\.(json|safetensors)$/.test(f) && !['reference.json', 'logits.safetensors'].includes(f));
    await page.setInputFiles('#model-files', files.map((f) => join(MODEL, f)));
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });
    await page.setInputFiles('#data-file', DATA);
    for (const [id, v] of [['#steps', '5'], ['#batch-size', '4'], ['#seq-len', '64'], ['#lr', '0.01'], ['#rank', '4'], ['#alpha', '8'], ['#train-seed', '5']]) {
      await page.fill(id, v);
    }
    await page.getByRole('button', { name: 'Train', exact: true }).click();
    await page.waitForSelector('#train-status:is([data-state=done],[data-state=error])', { timeout: 180000 });
    assert.equal(await page.getAttribute('#train-status', 'data-state'), 'done', await page.textContent('#error'));
    assert.equal(await page.getAttribute('#loss-chart polyline.train', 'data-points'), '5',
      `${await page.getAttribute('#loss-chart polyline.train', 'data-values')} ${await page.textContent('#train-stats')} ${page.url()}`);
    assert.match(await page.textContent('#train-stats'), /step 5\/5 .* tokens\/s/);
    const browserLosses = JSON.parse(await page.getAttribute('#loss-chart polyline.train', 'data-values'));
    assert.equal(browserLosses.length, 5);

    // The run config, run unchanged by the CLI beside files named as it names them.
    const [configDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export run config' }).click()]);
    const toml = readFileSync(await configDownload.path(), 'utf8');
    assert.equal(tomlValue(toml, 'rank'), 4);
    assert.equal(tomlValue(toml, 'steps'), 5);
    const dir = scratchDir('tinytune-ui-run-');
    symlinkSync(resolve(MODEL), join(dir, tomlValue(toml, 'model')));
    symlinkSync(resolve(DATA), join(dir, tomlValue(toml, 'data')));
    execFileSync('cp', [await configDownload.path(), join(dir, 'run.toml')]);
    execFileSync(resolve(process.env.TINYTUNE_BIN), ['train', '--config', 'run.toml', '--device', 'cpu'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
    // Step lines only: the run also logs its valid loss at the end (eval_every, valid_fraction).
    const native = readFileSync(join(dir, tomlValue(toml, 'out'), 'metrics.jsonl'), 'utf8').trim().split('\n')
      .map((l) => JSON.parse(l)).filter((r) => r.loss !== undefined).map((r) => r.loss);
    assert.equal(native.length, 5);
    // The same run in the page and on the native CPU (tolerance as in train.test.mjs).
    native.forEach((l, i) => assert.ok(Math.abs(l - browserLosses[i]) < 1e-3, `step ${i + 1}: native ${l} vs page ${browserLosses[i]}`));

    // The adapter as PEFT files.
    const downloads = [];
    page.on('download', (d) => downloads.push(d));
    await page.getByRole('button', { name: 'Export adapter' }).click();
    for (let i = 0; i < 50 && downloads.length < 2; i++) await page.waitForTimeout(100);
    assert.deepEqual(downloads.map((d) => d.suggestedFilename()).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const config = JSON.parse(readFileSync(await downloads.find((d) => d.suggestedFilename() === 'adapter_config.json').path(), 'utf8'));
    assert.equal(config.r, 4);
    assert.equal(config.peft_type, 'LORA');
  } finally {
    await context.close();
  }
});
