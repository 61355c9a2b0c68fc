// The engine under stress: a model too large for the memory the page was given is refused
// before anything is allocated and the loaded model stays; a real GPU device loss (the device
// destroyed, reported through GPUDevice.lost) restarts the engine, a second within a minute
// moves it to the CPU, and a third stops restarting. No model loads on WebGPU here, so the
// SwiftShader part stays quick.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });

const modelFiles = (dir) => readdirSync(dir).filter((f) => /\.(json|safetensors)$/.test(f) && !['reference.json', 'logits.safetensors'].includes(f)).map((f) => join(dir, f));

test('a model larger than the memory setting is refused from its headers and the loaded one stays', async () => {
  const page = await env.browser.newPage();
  try {
    // 4 MiB for weights: tiny-llama (under 1 MiB) fits, the built-in model (about 13 MiB) does not.
    await page.goto(env.server.base + '?gpu=off&model=none&memory=4', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#check-status[data-state=done]', { timeout: 120000 });
    await page.setInputFiles('#model-files', modelFiles('tests/fixtures/tiny-llama'));
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 60000 });
    const before = await page.textContent('#model-summary');
    assert.match(before, /Vocabulary512/);

    await page.setInputFiles('#model-files', modelFiles('www/assets/builtin/model'));
    await page.waitForFunction(() => /needs about/.test(document.querySelector('#error').textContent), null, { timeout: 60000 });
    const error = await page.textContent('#error');
    assert.match(error, /needs about 1\d\.\d MiB for its weights once loaded .* more than the 4\.0 MiB .*previous model stays loaded/, error);
    assert.equal(await page.getAttribute('#model-status', 'data-state'), 'ready');
    assert.equal(await page.textContent('#model-summary'), before);
    // The engine still holds tiny-llama: its tokenizer answers and generation is enabled.
    const { ids } = await page.evaluate(() => window.tinytune.send('encode', { text: 'hello' }));
    assert.ok(ids.length > 0 && ids.every((i) => i < 512));
    assert.equal(await page.isDisabled('#generate'), false);
  } finally {
    await page.close();
  }
});

test('a real device loss restarts the engine; a second moves it to the CPU; a third stops', async () => {
  const page = await env.browser.newPage();
  try {
    await page.goto(env.server.base + '?gpu=on&model=none', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#check-status[data-state=done]', { timeout: 180000 });
    assert.equal(await page.getAttribute('#device-status', 'data-state'), 'webgpu');
    const settled = () => page.waitForFunction(() => !window.tinytune.restarting(), null, { timeout: 120000 });

    // 1: the device is destroyed; the browser reports it lost; the engine comes back on WebGPU.
    assert.equal((await page.evaluate(() => window.tinytune.send('loseDevice'))).destroyed, true);
    await page.waitForFunction(() => /GPU device was lost \(Destroyed/.test(document.querySelector('#error').textContent), null, { timeout: 60000 });
    assert.match(await page.textContent('#error'), /It is being restarted on a new device/);
    await settled();
    assert.equal(await page.getAttribute('#device-status', 'data-state'), 'webgpu');
    assert.equal((await page.evaluate(() => window.tinytune.send('check'))).result.loss > 0, true);

    // 2: lost again within the minute: the engine continues on the CPU and says why.
    assert.equal((await page.evaluate(() => window.tinytune.send('loseDevice'))).destroyed, true);
    await page.waitForFunction(() => /lost twice within a minute/.test(document.querySelector('#error').textContent), null, { timeout: 60000 });
    await settled();
    assert.equal(await page.getAttribute('#device-status', 'data-state'), 'cpu');
    assert.match(await page.textContent('#device-notice'), /lost twice within a minute/);
    assert.equal((await page.evaluate(() => window.tinytune.send('loseDevice'))).destroyed, false, 'no GPU device is left to lose');

    // 3: the engine stops a third time (a crash): no more restarts, the page asks for a reload.
    await page.evaluate(() => window.tinytune.recover('simulated crash'));
    assert.match(await page.textContent('#error'), /3 times within a minute, so it is not restarted again/);
    assert.equal(await page.evaluate(() => window.tinytune.restarting()), false);
  } finally {
    await page.close();
  }
});
