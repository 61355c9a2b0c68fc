// Saved work in the browser (www/store.js), on both backends: OPFS and the IndexedDB fallback.
// A save is all or nothing, even when the browser's storage runs out mid-save.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser } from './harness.mjs';

const env = serverAndBrowser({ before, after });

// A fresh context per test: its own, empty, origin storage.
async function withPage(fn) {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    // ?model=none: the page need not load its built-in model for these tests.
    await page.goto(env.server.base + '?model=none', { waitUntil: 'domcontentloaded' });
    await fn(page);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
}

for (const backend of ['opfs', 'indexeddb']) {
  const prefer = backend === 'opfs' ? undefined : 'indexeddb';

  test(`${backend}: an adapter saves, lists, reads back byte for byte, is replaced, and is deleted`, () => withPage(async (page) => {
    const r = await page.evaluate(async (prefer) => {
      const { openStore, text } = await import('/store.js');
      const store = await openStore({ prefer });
      const weights = Uint8Array.from({ length: 3000 }, (_, i) => (i * 31) & 255);
      const name = 'run 1: r=4 / α=8';
      await store.put('adapter', name, { 'adapter_model.safetensors': weights, 'adapter_config.json': '{"r":4}' }, { steps: 5 });
      const listed = await store.list();
      const got = await store.get('adapter', name);
      const same = got.files['adapter_model.safetensors'].every((b, i) => b === weights[i]) &&
        got.files['adapter_model.safetensors'].length === weights.length;
      await store.put('adapter', name, { 'adapter_config.json': '{"r":8}' }, { steps: 9 });
      const replaced = await store.get('adapter', name);
      const listedAfter = await store.list();
      await store.delete('adapter', name);
      return { backend: store.backend, listed, same, config: text(got.files['adapter_config.json']), meta: got.meta,
        replacedFiles: Object.keys(replaced.files), replacedConfig: text(replaced.files['adapter_config.json']),
        replacedMeta: replaced.meta, listedAfter, afterDelete: await store.list(), gone: await store.get('adapter', name) };
    }, prefer);
    assert.equal(r.backend, backend);
    assert.equal(r.listed.length, 1);
    assert.equal(r.listed[0].kind, 'adapter');
    assert.equal(r.listed[0].name, 'run 1: r=4 / α=8', 'the original name, not the file-safe one');
    assert.equal(r.listed[0].bytes, 3000 + 7);
    assert.deepEqual(r.listed[0].meta, { steps: 5 });
    assert.ok(r.listed[0].savedAt > 1.7e12);
    assert.ok(r.same, 'the weights read back identical');
    assert.equal(r.config, '{"r":4}');
    assert.deepEqual(r.meta, { steps: 5 });
    assert.deepEqual(r.replacedFiles, ['adapter_config.json'], 'the new copy replaces the old, files and all');
    assert.equal(r.replacedConfig, '{"r":8}');
    assert.deepEqual(r.replacedMeta, { steps: 9 });
    assert.deepEqual(r.listedAfter.map((i) => [i.name, i.bytes]), [['run 1: r=4 / α=8', 7]]);
    assert.deepEqual(r.afterDelete, []);
    assert.equal(r.gone, null);
  }));

  test(`${backend}: a full storage fails the save plainly and leaves nothing behind`, () => withPage(async (page) => {
    const r = await page.evaluate(async ({ prefer, backend }) => {
      const { openStore, text } = await import('/store.js');
      const store = await openStore({ prefer });
      await store.put('adapter', 'keep', { 'a.bin': new Uint8Array([1, 2, 3]), 'b.json': '{"v":1}' }, { v: 1 });
      // Simulate the quota running out: on OPFS at the second file's write, on IndexedDB at the put.
      const full = () => new DOMException('full', 'QuotaExceededError');
      const proto = backend === 'opfs' ? FileSystemWritableFileStream.prototype : IDBObjectStore.prototype;
      const method = backend === 'opfs' ? 'write' : 'put';
      const original = proto[method];
      let calls = 0;
      proto[method] = function (...args) {
        if (backend === 'opfs' && ++calls !== 2) return original.apply(this, args);
        throw full();
      };
      const failures = [];
      try {
        for (const name of ['keep', 'new one']) {
          calls = 0;
          try {
            await store.put('adapter', name, { 'a.bin': new Uint8Array(2048), 'b.json': '{"v":2}' }, { v: 2 });
            failures.push(null);
          } catch (e) {
            failures.push({ message: e.message, quota: e.quota });
          }
        }
      } finally {
        proto[method] = original;
      }
      // On OPFS, look at the directories themselves: no half-written copy may remain.
      let dirs = null;
      if (backend === 'opfs') {
        const root = await (await navigator.storage.getDirectory()).getDirectoryHandle('tinytune');
        dirs = [];
        for await (const name of (await root.getDirectoryHandle('adapter')).keys()) dirs.push(name);
      }
      const kept = await store.get('adapter', 'keep');
      return { failures, dirs, listed: (await store.list()).map((i) => [i.name, i.bytes, i.meta]),
        kept: { a: [...kept.files['a.bin']], b: text(kept.files['b.json']), meta: kept.meta } };
    }, { prefer, backend });
    for (const [f, name] of [[r.failures[0], 'keep'], [r.failures[1], 'new one']]) {
      assert.ok(f, `saving '${name}' should have failed`);
      assert.equal(f.quota, true);
      assert.match(f.message, new RegExp(`^Browser storage is full: could not save adapter '${name}' \\(2\\.0 KiB\\)\\. .+ ` +
        "Delete saved items below, or free space in the browser's site settings\\.$"));
    }
    assert.deepEqual(r.listed, [['keep', 10, { v: 1 }]], 'only the earlier item is listed');
    assert.deepEqual(r.kept, { a: [1, 2, 3], b: '{"v":1}', meta: { v: 1 } }, 'and it is intact');
    if (backend === 'opfs') assert.equal(r.dirs.length, 1, `directories left: ${r.dirs}`);
  }));

  test(`${backend}: a saved item is still there after the page reloads`, () => withPage(async (page) => {
    const put = await page.evaluate(async (prefer) => {
      const { openStore } = await import('/store.js');
      const store = await openStore({ prefer });
      await store.put('data', 'train.jsonl', { 'train.jsonl': '{"text":"hi"}\n' }, { rows: 1 });
      return store.backend;
    }, prefer);
    assert.equal(put, backend);
    await page.reload();
    const listed = await page.evaluate(async (prefer) => {
      const { openStore } = await import('/store.js');
      return (await openStore({ prefer })).list();
    }, prefer);
    assert.deepEqual(listed.map((i) => [i.kind, i.name, i.bytes, i.meta]), [['data', 'train.jsonl', 14, { rows: 1 }]]);
  }));
}
