// The page opens on the built-in model: it downloads, loads and generates with no files of the
// visitor's own, and the built-in tasks are in the data picker. Prints the time to "ready".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });

test('the page opens on the built-in model and lists the built-in tasks', async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  try {
    const started = Date.now();
    await page.goto(env.server.base, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#model-status:is([data-state=ready],[data-state=error],[data-state=none])', { timeout: 180000 });
    const ms = Date.now() - started;
    assert.equal(await page.getAttribute('#model-status', 'data-state'), 'ready', await page.textContent('#model-status'));
    // With the default engine choice: here the CPU engine, since the WebGPU adapter is SwiftShader.
    const engine = JSON.parse(await page.textContent('#device-json')).device.kind;
    console.log(`# page load to built-in model ready (headless Chromium, default engine: ${engine}): ${(ms / 1000).toFixed(1)} s`);
    assert.match(await page.textContent('#model-summary'), /llama/);
    const options = await page.$$eval('#data-source option', (os) => os.map((o) => o.value));
    for (const t of ['json', 'sql', 'style', 'qa']) assert.ok(options.includes(t), t);
    await page.fill('#prompt', 'Once upon a time,');
    await page.fill('#temperature', '0');
    await page.fill('#max-new-tokens', '12');
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.waitForSelector('#generation[data-state=done]', { timeout: 120000 });
    assert.ok((await page.textContent('#generation')).length > 'Once upon a time,'.length + 5);
  } finally {
    await context.close();
  }
});
