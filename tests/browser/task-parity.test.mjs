// The task metric in the page is the CLI's: a LoRA trained by `tinytune train` on the built-in
// json task, imported into the page, scores the same before and after (greedy, first 4 test
// examples) as `tinytune eval --task json --limit 4`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { scratchDir, serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });
const MODEL = 'www/assets/builtin/model';
const LIMIT = 4;

function cli(args) {
  return execFileSync(resolve(process.env.TINYTUNE_BIN), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

test('the page scores a CLI-trained adapter on a built-in task as the CLI does', async () => {
  const out = scratchDir('tinytune-task-parity-');
  cli(['train', '--device', 'cpu', '--model', MODEL, '--data', 'www/assets/builtin/tasks/json/train.jsonl', '--out', out,
    '--steps', '40', '--batch-size', '8', '--seq-len', '128', '--rank', '8', '--alpha', '16', '--lr', '3e-3', '--seed', '0']);
  const score = (extra) => JSON.parse(cli(['eval', '--device', 'cpu', '--model', MODEL, '--task', 'json', '--limit', String(LIMIT), '--json', ...extra]))
    .metrics.map((m) => `${(100 * m.score).toFixed(1)}%`);
  const nativeBefore = score([]);
  const nativeAfter = score(['--adapter', out]);

  const context = await env.browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(env.server.base + `?gpu=off#task=json&taskLimit=${LIMIT}`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 120000 });
    await page.setInputFiles('#import-adapter', [join(out, 'adapter_config.json'), join(out, 'adapter_model.safetensors')]);
    await page.waitForFunction(() => /Adapter .* loaded/.test(document.querySelector('#train-status').textContent), null, { timeout: 60000 });
    await page.waitForFunction(() => !document.querySelector('#run-metric').disabled);
    await page.getByRole('button', { name: 'Run task metric' }).click();
    await page.waitForSelector('#metric-table:not([hidden])', { timeout: 300000 });
    const rows = await page.$$eval('#metric-table tbody tr', (rs) => rs.map((r) => [r.querySelector('.before').textContent, r.querySelector('.after').textContent]));
    assert.deepEqual(rows.map((r) => r[0]), nativeBefore, 'before: page vs CLI');
    assert.deepEqual(rows.map((r) => r[1]), nativeAfter, 'after: page vs CLI');
    console.log(`# json task, first ${LIMIT} test examples: before ${nativeBefore.join(' / ')}, after ${nativeAfter.join(' / ')} (page = CLI)`);
  } finally {
    await context.close();
  }
});
