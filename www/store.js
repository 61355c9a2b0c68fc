// Saved work (adapters, checkpoints, data sets) kept in the browser: the Origin Private File
// System where the browser has it, IndexedDB where it does not. Both backends keep one promise:
// an item is either wholly saved or not visible at all, and a failed save leaves nothing behind.
//
// OPFS layout: tinytune/<kind>/<safe-name>.<stamp>/<files> + meta.json. meta.json is written
// last and is what makes an item exist; the stamp lets a new copy be written in full beside the
// old one, which is removed only afterwards (OPFS cannot rename a directory everywhere yet).
// IndexedDB: database 'tinytune', store 'items', key '<kind>/<name>', one put per item in one
// transaction, so it is atomic by itself. Files are kept there as Blobs, which the browser does
// not read until asked, so list() stays cheap with large data sets saved.
import { formatBytes } from './render/memory.js';

export const KINDS = ['adapter', 'checkpoint', 'data'];
const ROOT = 'tinytune';
const META = 'meta.json';
// A directory without meta.json older than this is a save that died with its tab.
const ORPHAN_MS = 60 * 60 * 1000;

export const text = (bytes) => new TextDecoder().decode(bytes);

function toBytes(v, filename) {
  if (typeof v === 'string') return new TextEncoder().encode(v);
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError(`cannot save file '${filename}': expected a string or a Uint8Array`);
}

// File-system-safe, readable, never empty, never hidden (leading dots), never 'meta.json'.
function safeName(name) {
  return String(name).normalize('NFC').replace(/[^\p{L}\p{N}._-]+/gu, '_').replace(/^[._]+/, '').slice(0, 64) || 'item';
}

// Checks the arguments and settles everything a backend needs before it writes anything.
function prepare(kind, name, files, meta) {
  if (!KINDS.includes(kind)) throw new Error(`unknown kind '${kind}': use one of ${KINDS.join(', ')}`);
  if (typeof name !== 'string' || !name.trim()) throw new Error(`a saved ${kind} needs a name`);
  const used = new Set([META]);
  const list = Object.entries(files ?? {}).map(([filename, v]) => {
    let stored = safeName(filename);
    while (used.has(stored)) stored = `_${stored}`;
    used.add(stored);
    return { filename, stored, bytes: toBytes(v, filename) };
  });
  return {
    kind, name, files: list,
    bytes: list.reduce((s, f) => s + f.bytes.byteLength, 0),
    // Stored as JSON by one backend, structured-cloned by the other: normalise so both agree.
    meta: meta === undefined ? null : JSON.parse(JSON.stringify(meta)),
  };
}

const isQuota = (e) => e?.name === 'QuotaExceededError';

async function quotaError(item, cause) {
  const { usage, quota } = await estimate();
  const used = usage !== null && quota !== null ? `${formatBytes(usage)} of ${formatBytes(quota)} is used.`
    : 'The browser does not say how much is used.';
  const e = new Error(`Browser storage is full: could not save ${item.kind} '${item.name}' (${formatBytes(item.bytes)}). ` +
    `${used} Delete saved items below, or free space in the browser's site settings.`, { cause });
  e.quota = true;
  return e;
}

export async function estimate() {
  const s = globalThis.navigator?.storage;
  const est = await s?.estimate?.().catch(() => null);
  const persisted = await s?.persisted?.().catch(() => null);
  return { usage: est?.usage ?? null, quota: est?.quota ?? null, persisted: persisted ?? null };
}

// --- OPFS -------------------------------------------------------------------------------------

async function writeFile(dir, filename, bytes) {
  const w = await (await dir.getFileHandle(filename, { create: true })).createWritable();
  try {
    await w.write(bytes);
    await w.close();
  } catch (e) {
    // An open writable holds a lock that would stop the cleanup from removing the file.
    await w.abort().catch(() => {});
    throw e;
  }
}

// Chromium releases an aborted writable's lock a moment after abort() resolves, so removing its
// directory at once can fail with NoModificationAllowedError: retry briefly.
async function remove(dir, dirName) {
  for (let wait = 10; ; wait *= 2) {
    try {
      return await dir.removeEntry(dirName, { recursive: true });
    } catch (e) {
      if (e.name === 'NotFoundError') return;
      if (e.name !== 'NoModificationAllowedError' || wait > 1000) throw e;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

// Cleanup that may fail harmlessly: a copy without meta.json is invisible and is swept later,
// and an old copy left beside a newer one is never the one listed.
const tidy = (dir, dirName) => remove(dir, dirName).catch(() => {});

// Total order on copies of one item: later savedAt, then larger directory name, wins. Every tab
// agrees on it, so two tabs saving the same name at once keep exactly one copy.
const newer = (a, b) => a.record.savedAt > b.record.savedAt || (a.record.savedAt === b.record.savedAt && a.dirName > b.dirName);

async function opfsStore() {
  const top = await (await navigator.storage.getDirectory()).getDirectoryHandle(ROOT, { create: true });
  const kindDir = (kind) => top.getDirectoryHandle(kind, { create: true });

  // Every complete copy of every item of a kind; directories without a readable meta.json are
  // saves in progress (or dead ones) and do not count.
  async function scan(kind, { orphans } = {}) {
    const dir = await kindDir(kind);
    const found = [];
    for await (const [dirName, handle] of dir.entries()) {
      if (handle.kind !== 'directory') continue;
      try {
        const record = JSON.parse(await (await (await handle.getFileHandle(META)).getFile()).text());
        found.push({ dirName, handle, record });
      } catch {
        orphans?.push(dirName);
      }
    }
    return { dir, found };
  }

  // The newest copy of each name.
  async function items(kind) {
    const latest = new Map();
    for (const c of (await scan(kind)).found) {
      const seen = latest.get(c.record.name);
      if (!seen || newer(c, seen)) latest.set(c.record.name, c);
    }
    return latest;
  }

  for (const kind of KINDS) {
    const orphans = [];
    const { dir } = await scan(kind, { orphans });
    for (const d of orphans) {
      const stamp = parseInt(d.slice(d.lastIndexOf('.') + 1, -4), 36);
      if (Date.now() - stamp > ORPHAN_MS) await tidy(dir, d);
    }
  }

  return {
    backend: 'opfs',
    async put(item) {
      const { dir, found } = await scan(item.kind);
      const before = found.filter((c) => c.record.name === item.name);
      // Strictly after any copy it replaces, even within one millisecond.
      const savedAt = Math.max(Date.now(), ...before.map((c) => c.record.savedAt + 1));
      const dirName = `${safeName(item.name)}.${savedAt.toString(36)}${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}`;
      const record = { kind: item.kind, name: item.name, meta: item.meta, bytes: item.bytes, savedAt,
        files: item.files.map(({ filename, stored, bytes }) => ({ filename, stored, bytes: bytes.byteLength })) };
      try {
        const handle = await dir.getDirectoryHandle(dirName, { create: true });
        for (const f of item.files) await writeFile(handle, f.stored, f.bytes);
        await writeFile(handle, META, JSON.stringify(record)); // last: now the item exists
      } catch (e) {
        await tidy(dir, dirName);
        throw e;
      }
      // The new copy is complete, so the old ones may go. A crash here leaves both; the
      // newer one is the one listed, and the next save or delete of this name tidies up.
      const mine = { record, dirName };
      for (const c of (await scan(item.kind)).found) {
        if (c.record.name === item.name && c.dirName !== dirName && newer(mine, c)) await tidy(dir, c.dirName);
      }
    },
    async list() {
      const out = [];
      for (const kind of KINDS) for (const c of (await items(kind)).values()) out.push(c.record);
      return out;
    },
    async get(kind, name) {
      const c = (await items(kind)).get(name);
      if (!c) return null;
      const files = {};
      for (const f of c.record.files) {
        files[f.filename] = new Uint8Array(await (await (await c.handle.getFileHandle(f.stored)).getFile()).arrayBuffer());
      }
      return { meta: c.record.meta, files };
    },
    async delete(kind, name) {
      const { dir, found } = await scan(kind);
      for (const c of found) if (c.record.name === name) await remove(dir, c.dirName);
    },
  };
}

// --- IndexedDB --------------------------------------------------------------------------------

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

// Runs fn(objectStore) in one transaction and resolves with its request's result only once the
// transaction has committed: a put is not saved until then (quota errors arrive as an abort).
function transact(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction('items', mode);
    let req;
    t.oncomplete = () => resolve(req?.result);
    t.onabort = () => reject(t.error ?? new DOMException('the save was cancelled', 'AbortError'));
    try {
      req = fn(t.objectStore('items'));
    } catch (e) {
      t.abort();
      reject(e);
    }
  });
}

async function idbStore() {
  const open = indexedDB.open('tinytune', 1);
  open.onupgradeneeded = () => open.result.createObjectStore('items');
  const db = await request(open);
  return {
    backend: 'indexeddb',
    async put(item) {
      const files = {};
      for (const f of item.files) files[f.filename] = new Blob([f.bytes]);
      const record = { kind: item.kind, name: item.name, meta: item.meta, files, bytes: item.bytes, savedAt: Date.now() };
      await transact(db, 'readwrite', (s) => s.put(record, `${item.kind}/${item.name}`));
    },
    async list() {
      return transact(db, 'readonly', (s) => s.getAll());
    },
    async get(kind, name) {
      const record = await transact(db, 'readonly', (s) => s.get(`${kind}/${name}`));
      if (!record) return null;
      const files = {};
      for (const [filename, blob] of Object.entries(record.files)) files[filename] = new Uint8Array(await blob.arrayBuffer());
      return { meta: record.meta, files };
    },
    async delete(kind, name) {
      await transact(db, 'readwrite', (s) => s.delete(`${kind}/${name}`));
    },
  };
}

// --- the store ----------------------------------------------------------------------------------

function opfsUsable() {
  // Safari long had OPFS without createWritable (workers' sync handles only): not usable here.
  return typeof navigator !== 'undefined' && typeof navigator.storage?.getDirectory === 'function' &&
    typeof FileSystemFileHandle !== 'undefined' && 'createWritable' in FileSystemFileHandle.prototype;
}

// { prefer: 'indexeddb' } skips OPFS (the tests cover both backends this way).
export async function openStore({ prefer } = {}) {
  let backend = null;
  if (prefer !== 'indexeddb' && opfsUsable()) {
    // getDirectory throws in some private windows; IndexedDB may still work there.
    backend = await opfsStore().catch(() => null);
  }
  backend ??= await idbStore();
  return {
    backend: backend.backend,
    async put(kind, name, files, meta) {
      const item = prepare(kind, name, files, meta);
      try {
        await backend.put(item);
      } catch (e) {
        throw isQuota(e) ? await quotaError(item, e) : e;
      }
    },
    // [{ kind, name, meta, bytes, savedAt }], newest first. savedAt is in ms since the epoch.
    async list() {
      return (await backend.list()).map(({ kind, name, meta, bytes, savedAt }) => ({ kind, name, meta, bytes, savedAt }))
        .sort((a, b) => b.savedAt - a.savedAt);
    },
    // { meta, files: { filename: Uint8Array } }, or null when nothing of that name is saved.
    get: (kind, name) => backend.get(kind, name),
    delete: (kind, name) => backend.delete(kind, name),
    estimate,
    async requestPersist() {
      return Boolean(await navigator.storage?.persist?.().catch(() => false));
    },
  };
}
