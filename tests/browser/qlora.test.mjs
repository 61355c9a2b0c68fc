// QLoRA in the page: the WGSL 4-bit kernels equal the CPU path bit for bit on WebGPU
// (SwiftShader here); a QLoRA run from the page's controls trains on WebGPU like the native
// CLI, and its memory ledger measures the 4-bit base; the Precision section shows a histogram
// and a table of formats with their held-out losses (on the CPU engine, for speed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { scratchDir, serverAndBrowser } from './harness.mjs';

const MODEL = 'tests/fixtures/tiny-llama';
const DATA = 'tests/fixtures/corpus/eval.jsonl';

const env = serverAndBrowser({ before, after });

async function openWithModel(query, options = {}) {
  const context = await env.browser.newContext(options);
  const page = await context.newPage();
  await page.goto(env.server.base + query, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#check-status[data-state=done]', { timeout: 180000 });
  const files = readdirSync(MODEL).filter((f) => /\.(json|safetensors)$/.test(f) && !['reference.json', 'logits.safetensors'].includes(f));
  await page.setInputFiles('#model-files', files.map((f) => join(MODEL, f)));
  await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });
  return { context, page };
}

// The page's exported run.toml, run by the CLI beside files named as it names them.
function nativeLosses(tomlPath) {
  const toml = readFileSync(tomlPath, 'utf8');
  const value = (key) => JSON.parse(new RegExp(`^${key} = (.*)$`, 'm').exec(toml)[1]);
  assert.equal(value('method'), 'qlora');
  const dir = scratchDir('tinytune-native-qlora-');
  symlinkSync(resolve(MODEL), join(dir, value('model')));
  symlinkSync(resolve(DATA), join(dir, value('data')));
  execFileSync('cp', [tomlPath, join(dir, 'run.toml')]);
  execFileSync(resolve(process.env.TINYTUNE_BIN), ['train', '--config', 'run.toml', '--device', 'cpu'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  return readFileSync(join(dir, value('out'), 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => 'loss' in r).map((r) => r.loss);
}

test('a QLoRA run on WebGPU: bit-exact kernels, the losses of the native CLI, and a measured 4-bit base', async () => {
  const { context, page } = await openWithModel('?gpu=on&model=none', { acceptDownloads: true });
  try {
    assert.equal(await page.getAttribute('#device-status', 'data-state'), 'webgpu', 'this test needs the WebGPU adapter');
    await page.getByRole('button', { name: 'Check the 4-bit kernels' }).click();
    await page.waitForSelector('#q4-status:is([data-state=done],[data-state=failed],[data-state=error])', { timeout: 120000 });
    const q4 = await page.textContent('#q4-status');
    assert.equal(await page.getAttribute('#q4-status', 'data-state'), 'done', q4);
    assert.match(q4, /WGSL 4-bit kernels on WebGPU: dequantization equals the CPU path bit for bit on 15 matrices/);

    await page.setInputFiles('#data-file', DATA);
    await page.selectOption('#method', 'qlora');
    // Small, as SwiftShader is slow: 3 steps of 2 × 64 tokens.
    for (const [id, v] of [['#steps', '3'], ['#batch-size', '2'], ['#seq-len', '64'], ['#lr', '0.01'], ['#rank', '4'], ['#alpha', '8'], ['#train-seed', '5']]) {
      await page.fill(id, v);
    }
    await page.getByRole('button', { name: 'Train', exact: true }).click();
    await page.waitForSelector('#train-status:is([data-state=done],[data-state=error])', { timeout: 300000 });
    assert.equal(await page.getAttribute('#train-status', 'data-state'), 'done', await page.textContent('#error'));
    const losses = JSON.parse(await page.getAttribute('#loss-chart polyline.train', 'data-values'));
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export run config' }).click()]);
    const native = nativeLosses(await download.path());
    assert.equal(losses.length, 3);
    losses.forEach((l, i) => assert.ok(Math.abs(l - native[i]) < 1e-3, `step ${i + 1}: page ${l} vs native ${native[i]}`));

    // The ledger: this run is QLoRA, measured by the GPU allocator; the base is measured in bytes.
    const measured = await page.$$eval('#memory-ledger .ledger-row.measured', (rows) => rows.map((r) => r.dataset.label));
    assert.equal(measured.length, 1, 'one measured row');
    assert.match(measured[0], /GPU allocator/);
    const current = await page.$$eval('#memory-ledger .ledger-row.current:not(.measured)', (rows) => rows.map((r) => r.dataset.label));
    assert.match(current[0], /QLoRA r = 4/);
    const base = await page.$eval('#memory-ledger .ledger-base', (p) => ({ bytes: Number(p.dataset.deviceBytes), text: p.textContent }));
    const summary = await page.evaluate(() => window.tinytune.send('inspect', {}).then((v) => v.memory.base));
    assert.equal(summary.quantization, 'nf4+dq');
    // tiny-llama: 14 linear weights (86016 values, 4-bit) and 65536 f32 values (embeddings, head,
    // norms). The formula counts 4.127 bits a linear weight; the device also holds each
    // matrix's code tables (16 + 256 f32) and whole second-level blocks: at most 1100 B a matrix.
    assert.ok(base.bytes < summary.f32_bytes, `4-bit base ${base.bytes} B vs f32 ${summary.f32_bytes} B`);
    const extra = base.bytes - summary.predicted;
    assert.ok(extra >= 0 && extra <= 14 * 1100, `measured ${base.bytes} B vs predicted ${summary.predicted} B`);
    assert.ok(summary.allocator_after_load > 0, 'the allocator measured the base');
    assert.match(base.text, /linear weights in nf4\+dq at 4\.1\d+ bits each/);
  } finally {
    await context.close();
  }
});

test('the Precision section: a histogram with the NF4 levels, and every format with bits, error and held-out loss', async () => {
  const { context, page } = await openWithModel('?gpu=off&model=none');
  try {
    await page.waitForSelector('#precision-table:not([hidden]) tbody tr', { timeout: 60000 });
    const options = await page.$$eval('#precision-matrix option', (o) => o.map((x) => x.value));
    assert.ok(options.includes('model.layers.0.mlp.up_proj'), options.join(', '));
    await page.selectOption('#precision-matrix', 'model.layers.0.mlp.up_proj');
    await page.waitForFunction(() => document.querySelector('#precision-block').textContent.includes('up_proj'));
    const bars = await page.$$eval('#precision-histogram rect.hist-bar', (r) => r.map((x) => Number(x.dataset.count)));
    // 160 × 64 weights in the histogram, and the 16 levels drawn over it.
    assert.equal(bars.reduce((a, b) => a + b, 0), 160 * 64);
    assert.equal(await page.$$eval('#precision-histogram line.hist-level', (l) => l.length), 16);

    const row = (format) => page.$eval(`#precision-table tr[data-format=${format}]`, (tr) =>
      Object.fromEntries([...tr.cells].map((c) => [c.className || 'name', c.dataset.value ?? c.textContent])));
    // A multiple of 64: 4 + 8/64 + 32/(64·256) and 4 + 32/64.
    assert.equal(Number((await row('nf4_dq')).bits).toFixed(3), '4.127');
    assert.equal(Number((await row('nf4')).bits), 4.5);
    assert.equal(await page.$eval('#precision-table tr[data-format=nf4_dq] td.bits', (td) => td.textContent), '4.127');
    assert.equal(Number((await row('fp32')).rmse), 0);
    assert.ok(Number((await row('nf4')).rmse) > Number((await row('int8')).rmse), 'nf4 rounds more than int8');

    await page.setInputFiles('#data-file', DATA);
    await page.getByRole('button', { name: 'Measure held-out loss' }).click();
    await page.waitForFunction(() => /Held-out loss on/.test(document.querySelector('#precision-status').textContent), null, { timeout: 120000 });
    const losses = {};
    for (const f of ['fp32', 'bf16', 'int8', 'nf4', 'nf4_dq', 'fp4']) losses[f] = Number((await row(f)).loss);
    for (const [f, v] of Object.entries(losses)) assert.ok(Number.isFinite(v) && v > 0, `${f}: ${v}`);
    // bf16 keeps 8 bits of mantissa, 4-bit formats 16 levels a block: bf16 moves the loss less.
    // (Which way a 4-bit format moves it on a small held-out set is noise; how far is not.)
    assert.ok(Math.abs(losses.bf16 - losses.fp32) < 0.01, `bf16 barely moves the loss: ${JSON.stringify(losses)}`);
    assert.ok(Math.abs(losses.nf4 - losses.fp32) > Math.abs(losses.bf16 - losses.fp32), `nf4 moves it more: ${JSON.stringify(losses)}`);
  } finally {
    await context.close();
  }
});
