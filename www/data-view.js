// The Data view: the data picker (a built-in task, the story corpus, or the visitor's file, picked
// or dropped and kept in the browser) and the preview of the first examples as the trainer
// tokenizes them, with the share of tokens that carry the loss. Tokenizing runs in the worker;
// this file asks for it and renders. `t` is the training controller's state, shared.

import { $, showError, html } from './dom.js';
import { send } from './engine.js';
import { text as utf8 } from './store.js';
import { formatBytes } from './render/memory.js';

// The built-in tasks (www/assets/builtin/tasks/).
export const TASKS = ['json', 'sql', 'style', 'qa', 'pirate-prefs'];

export function initDataView({ state, t, refreshButtons, listSaved, save }) {
  async function fetchTask(task, file) {
    const res = await fetch(`assets/builtin/tasks/${task}/${file}`);
    if (!res.ok) throw new Error(`the built-in task "${task}" has no ${file} (HTTP ${res.status})`);
    return res.text();
  }

  async function chooseData() {
    const source = state.get().task;
    $('#data-drop').hidden = source !== 'upload';
    const token = ++t.dataToken; // a later choice wins over a slower earlier one
    if (source === 'upload' && t.data?.source === 'upload') {
      refreshButtons();
      preview();
      return;
    }
    t.data = null;
    if (TASKS.includes(source)) {
      try {
        const text = await fetchTask(source, 'train.jsonl');
        if (token !== t.dataToken) return;
        t.data = { name: `${source}-train.jsonl`, text, source };
        const n = text.split('\n').filter((l) => l.trim()).length;
        const pairs = text.includes('"rejected"');
        $('#data-status').textContent = `Built-in task "${source}": ${n} ${pairs ? 'preference pairs (train with DPO)' : 'prompt/completion examples'}.`;
        if (!$('#compare-prompt').value || $('#compare-prompt').dataset.auto === 'yes') {
          const first = JSON.parse((await fetchTask(source, 'test.jsonl')).split('\n')[0]);
          $('#compare-prompt').value = first.prompt;
          $('#compare-prompt').dataset.auto = 'yes';
        }
      } catch (e) {
        showError(e.message);
      }
    } else if (source === 'corpus') {
      // The stories the built-in model was pretrained on (its held-out part): plain text, so every
      // token carries the loss, as in continued pretraining.
      try {
        const res = await fetch('assets/builtin/corpus/valid.txt');
        if (!res.ok) throw new Error(`the story corpus could not be fetched (HTTP ${res.status})`);
        const text = await res.text();
        if (token !== t.dataToken) return;
        t.data = { name: 'stories.txt', text, source: 'corpus' };
        $('#data-status').textContent = `The story corpus (held-out part, ${(text.length / 1024).toFixed(0)} KiB of plain text).`;
      } catch (e) {
        showError(e.message);
      }
    } else {
      // The last uploaded file, if one is kept in this browser.
      const kept = (await listSaved()).find((i) => i.kind === 'data');
      if (token !== t.dataToken) return;
      if (kept) {
        const item = await t.store.get('data', kept.name);
        t.data = { name: kept.name, text: utf8(item.files[Object.keys(item.files)[0]]), source: 'upload' };
        $('#data-status').textContent = `${kept.name} (kept in this browser). Pick or drop another file to change it.`;
      } else {
        $('#data-status').textContent = 'Pick or drop a .txt or .jsonl file.';
      }
    }
    refreshButtons();
    preview();
  }

  async function useUpload(file) {
    const text = await file.text();
    t.dataToken++;
    t.data = { name: file.name, text, source: 'upload' };
    state.set({ task: 'upload' });
    $('#data-status').textContent = `${file.name}: ${formatBytes(file.size)}.`;
    refreshButtons();
    preview();
    save('data', file.name, { [file.name]: text }, { size: file.size });
  }

  // The first examples as the trainer sees them: learned tokens highlighted, context greyed.
  async function preview() {
    const box = $('#data-preview');
    if (!t.modelReady || !t.data) {
      box.hidden = true;
      $('#data-preview-key').hidden = true;
      return;
    }
    const data = t.data;
    try {
      const p = await send('preview', { dataName: data.name, dataText: data.text, seqLen: state.get().seqLen, n: 3 });
      if (data !== t.data) return; // the data changed while this preview was made
      box.replaceChildren(...p.examples.map((pieces, i) => {
        const div = html('div', { class: 'example', 'aria-label': `example ${i + 1}` });
        for (const [text, trained] of pieces) div.append(html('span', { class: trained ? 'tok trained' : 'tok' }, text));
        return div;
      }));
      box.hidden = false;
      $('#data-preview-key').hidden = false;
      const format = { Text: 'plain text (continued pretraining)', JsonlText: 'JSONL text (continued pretraining)',
        PromptCompletion: 'prompt/completion (SFT)', Chat: 'chat messages (SFT)', Preference: 'preference pairs (DPO)' }[p.format] || p.format;
      box.dataset.tokens = String(p.tokens);
      box.dataset.learned = String(p.learned);
      $('#data-status').textContent += ` Read as ${format}: ${p.total} examples${p.skipped ? `, ${p.skipped} bad lines skipped` : ''};` +
        ` ${p.learned.toLocaleString('en-US')} of ${p.tokens.toLocaleString('en-US')} tokens carry the loss (${(100 * p.learned / Math.max(1, p.tokens)).toFixed(0)}%).`;
      box.dispatchEvent(new CustomEvent('previewed'));
    } catch (e) {
      if (data !== t.data) return;
      box.hidden = true;
      $('#data-status').textContent = `This file cannot be used: ${e.message}`;
      showError(e.message);
    }
  }

  $('#data-file').addEventListener('change', (e) => e.target.files[0] && useUpload(e.target.files[0]));
  const drop = $('#data-drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer.files[0];
    if (f) useUpload(f);
  });
  return { chooseData, preview, fetchTask };
}
