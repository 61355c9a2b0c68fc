// The real page, served by `tinytune serve`, in headless Chromium with WebGPU (SwiftShader on a
// machine without a GPU). Run by scripts/test with TINYTUNE_BIN pointing at the built command.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { startServer, launch } from './harness.mjs';

const TOLERANCE = 1e-4;

let server;
let base;
let browser;

before(async () => {
  server = await startServer();
  base = server.base;
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

// Open the page, record every request the page and its worker make, wait for the check.
async function openPage(query = '', on = browser) {
  const context = await on.newContext({ viewport: { width: 1280, height: 800 } });
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + query, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#check-status:is([data-state=done],[data-state=failed],[data-state=error])', { timeout: 180000 });
  const state = await page.getAttribute('#check-status', 'data-state');
  const shownError = await page.locator('#error').isVisible() ? await page.textContent('#error') : null;
  const device = JSON.parse(await page.textContent('#device-json'));
  const checks = JSON.parse(await page.textContent('#check-json') || 'null');
  return { context, page, requests, errors, state, shownError, device, checks };
}

function maxAbsDiff(a, b) {
  let m = Math.abs(a.loss - b.loss);
  for (const k of ['grad_w1', 'grad_w2']) {
    assert.equal(a[k].length, b[k].length, k);
    for (let i = 0; i < a[k].length; i++) m = Math.max(m, Math.abs(a[k][i] - b[k][i]));
  }
  return m;
}

test('the page runs on a real WebGPU adapter, agrees with the wasm CPU path, and stays on its origin', async () => {
  const { context, page, requests, errors, state, shownError, device, checks } = await openPage('?gpu=on');
  try {
    assert.equal(shownError, null, `the page showed an error: ${shownError}`);
    assert.deepEqual(errors, []);
    assert.equal(state, 'done');

    // A real WebGPU adapter: the browser's own report, and burn's device on the WebGPU backend.
    assert.equal(device.fallbackReason, null);
    assert.ok(device.adapter, 'the browser reported an adapter');
    assert.ok(device.adapter.vendor.length > 0, `adapter vendor: ${JSON.stringify(device.adapter)}`);
    assert.equal(device.device.kind, 'wgpu');
    assert.equal(device.device.backend, 'browserwebgpu');
    assert.ok(device.device.limits.max_storage_buffer_binding_size >= 128 * 1024 * 1024);
    assert.equal(await page.getAttribute('#device-status', 'data-state'), 'webgpu');
    assert.match(await page.textContent('#device-status'), /WebGPU adapter: \S+/);

    // The same forward + backward pass on WebGPU and on the wasm CPU path.
    const gpu = checks.runs.find((r) => r.kind === 'wgpu');
    const cpu = checks.runs.find((r) => r.kind === 'cpu');
    assert.ok(gpu && cpu, 'both devices ran the check');
    const d = maxAbsDiff(gpu.result, cpu.result);
    assert.ok(d <= TOLERANCE, `WebGPU vs CPU: max |Δ| ${d}`);
    assert.ok(maxAbsDiff(gpu.result, checks.reference) <= TOLERANCE, 'WebGPU vs reference');
    assert.ok(maxAbsDiff(cpu.result, checks.reference) <= TOLERANCE, 'CPU vs reference');
    assert.ok(checks.reference.loss > 0.05 && gpu.result.grad_w1.some((g) => Math.abs(g) > 1e-3), 'non-trivial numbers');

    // No request left the page's origin, and the recorder saw the worker's own fetches.
    const origin = new URL(base).origin;
    const foreign = requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== origin);
    assert.deepEqual(foreign, []);
    assert.ok(requests.some((u) => u.endsWith('/pkg/tinytune_bg.wasm')), `requests seen: ${requests.join(', ')}`);

    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/playground.png', fullPage: true });
  } finally {
    await context.close();
  }
});

test('without a WebGPU adapter the page says so plainly and runs on the CPU', async () => {
  // The same Chromium without --enable-unsafe-webgpu: navigator.gpu exists but yields no adapter.
  const plain = await launch({ webgpu: false });
  const { context, page, errors, state, shownError, device, checks } = await openPage('', plain);
  try {
    assert.equal(shownError, null, `the page showed an error: ${shownError}`);
    assert.deepEqual(errors, []);
    assert.equal(state, 'done');
    assert.equal(device.device.kind, 'cpu');
    assert.equal(await page.getAttribute('#device-status', 'data-state'), 'cpu');
    assert.ok(await page.locator('#device-notice').isVisible());
    assert.match(await page.textContent('#device-notice'), /WebGPU is not available: .*no adapter.*runs on the CPU/s);
    assert.equal(checks.runs.length, 1);
    assert.ok(maxAbsDiff(checks.runs[0].result, checks.reference) <= TOLERANCE);
  } finally {
    await context.close();
    await plain.close();
  }
});

test('?gpu=off forces the CPU path even where WebGPU works', async () => {
  const { context, page, state, device } = await openPage('?gpu=off');
  try {
    assert.equal(state, 'done');
    assert.equal(device.device.kind, 'cpu');
    assert.match(await page.textContent('#device-notice'), /turned off/);
  } finally {
    await context.close();
  }
});

test('a first press of Train with the page\'s defaults shows the run\'s estimate, a loss point within 30 s, and ends on its own', async () => {
  // Headless Chromium's adapter here is the software one: the page runs on its CPU engine.
  // The defaults: the built-in model, the json task, LoRA r 8, batch 8 × 128 tokens; the steps
  // come from a step the page measures once the model is loaded, so that the run ends in about
  // a minute (20 steps unless measured otherwise).
  const { context, page } = await openPage('');
  try {
    await page.waitForSelector('#model-status[data-state=ready]', { timeout: 180000 });
    await page.waitForFunction(() => /json/.test(document.querySelector('#data-status').textContent));
    await page.waitForFunction(() => /^Estimate:/.test(document.querySelector('#train-estimate').textContent), null, { timeout: 60000 });
    const estimate = await page.textContent('#train-estimate');
    const steps = Number(await page.inputValue('#steps'));
    const m = estimate.match(/about (\d+) s for (\d+) steps of 8 × 128 tokens, ([\d.]+) s a step \(timed here on a LoRA step of 2 × 128: ([\d.]+) s\)\. Steps set to (\d+)/);
    assert.ok(m, estimate);
    assert.equal(Number(m[2]), steps);
    assert.equal(Number(m[5]), steps);
    const perStep = Number(m[3]);
    // A batch of 8 is four of the measured batch of 2: the step is scaled by the tokens.
    assert.ok(Math.abs(perStep - 4 * Number(m[4])) <= 0.02 * perStep + 0.01, estimate);
    // 55 s of estimated steps (the estimate errs long; evaluations and checkpoints take the
    // rest of the minute), 5 to 100 steps.
    const sized = Math.max(5, Math.min(100, 55 / perStep));
    assert.ok(Math.abs(steps - sized) <= 1 + 0.02 * sized, `${steps} steps of ${perStep} s`);
    if (steps !== 20) assert.match(page.url(), new RegExp(`#steps=${steps}$`));
    const pressed = Date.now();
    await page.getByRole('button', { name: 'Train', exact: true }).click();
    await page.waitForSelector('#loss-chart polyline.train:not([data-points="0"])', { timeout: 30000 });
    const first = (Date.now() - pressed) / 1000;
    await page.waitForSelector('#train-status:is([data-state=done],[data-state=error])', { timeout: 300000 });
    assert.equal(await page.getAttribute('#train-status', 'data-state'), 'done', await page.textContent('#error'));
    assert.equal(await page.getAttribute('#loss-chart polyline.train', 'data-points'), String(steps));
    const took = (Date.now() - pressed) / 1000;
    console.log(`estimate: ${estimate}\nfirst loss point after ${first.toFixed(1)} s; the ${steps} steps ended after ${took.toFixed(0)} s (estimated ${m[1]} s)`);
    // After the run, its own pace is the estimate.
    assert.match(await page.textContent('#train-estimate'), /the last run's pace, \d+ tokens\/s/);
  } finally {
    await context.close();
  }
});

test('by default the page picks its CPU engine over a software WebGPU adapter, and says why', async () => {
  // This machine's WebGPU adapter is SwiftShader, a software renderer: a LoRA step of the
  // built-in model takes about 24 s there against 1.5 s on the page's CPU engine.
  const { context, page, state, device } = await openPage('?model=none');
  try {
    assert.equal(state, 'done');
    assert.equal(device.software, true, JSON.stringify(device.adapter));
    assert.equal(device.device.kind, 'cpu');
    assert.match(await page.textContent('#device-notice'), /software renderer.*\?gpu=on/);
    assert.match(await page.textContent('#device-status'), /CPU engine \(faster here than the software WebGPU adapter\)/);
  } finally {
    await context.close();
  }
});
