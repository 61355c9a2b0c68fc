// Shared by the browser tests: start `tinytune serve` on a free port, launch Debian's Chromium.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// DESIGN.md: WebGPU on, and nothing that makes Chromium call home.
export const FLAGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];

// Scratch folders of this test file, removed when its process exits, pass or fail, so repeated
// runs leave nothing behind in the temp folder.
const scratch = [];
process.once('exit', () => scratch.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** A new empty folder `<temp>/<prefix>XXXXXX` that lives as long as this test file's process. */
export function scratchDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

export async function startServer() {
  const bin = process.env.TINYTUNE_BIN;
  if (!bin) throw new Error('TINYTUNE_BIN must point at the tinytune binary (scripts/test sets it)');
  const proc = spawn(bin, ['serve', '--port', '0', '--root', 'www', '--models', 'tests/fixtures/gguf'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const base = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /http:\/\/[^\s/]+\//.exec(out);
      if (m) resolve(m[0]);
    });
    proc.on('exit', (code) => reject(new Error(`tinytune serve exited with ${code}`)));
    setTimeout(() => reject(new Error('tinytune serve printed no address within 20 s')), 20000);
  });
  return { base, stop: () => proc.kill() };
}

// The page folds its advanced sections on a first visit; tests that work in them open every
// section (as a visitor's kept choice would), unless they pass `folded: true` to see the first
// visit itself.
export async function launch({ webgpu = true } = {}) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: webgpu ? FLAGS : FLAGS.filter((f) => f !== '--enable-unsafe-webgpu'),
  });
  const newContext = browser.newContext.bind(browser);
  browser.newContext = async (options = {}) => {
    const { folded = false, ...rest } = options;
    const context = await newContext(rest);
    if (!folded) await context.addInitScript(() => { try { localStorage.setItem('tinytune.sections', 'all-open'); } catch { /* opaque origin */ } });
    return context;
  };
  browser.newPage = async (options = {}) => {
    const context = await browser.newContext(options);
    const page = await context.newPage();
    page.on('close', () => context.close().catch(() => {}));
    return page;
  };
  return browser;
}

// The usual setup of a test file: one server and one browser, shared by its tests and closed
// after them. The returned object's fields are filled once `before` has run.
export function serverAndBrowser(hooks) {
  const env = { server: null, browser: null };
  hooks.before(async () => {
    env.server = await startServer();
    env.browser = await launch();
  });
  hooks.after(async () => {
    await env.browser?.close();
    env.server?.stop();
  });
  return env;
}
