// Runs you can compare: every training run in the page keeps its settings, its curves and its
// results; the runs ticked in the table overlay the loss chart; the table compares them and
// exports as CSV. Runs are small, so they live in localStorage and survive a reload.
//
// State (the list) and the pure functions that turn it into rows and CSV come first; the
// controller at the end wires them to the page.

import { $, html, download, showError } from './dom.js';

const KEY = 'tinytune.runs';
const MAX_RUNS = 60;
// The colour classes the overlay cycles through (views.css).
const HUES = 6;

// The table's columns: [key, heading]. The CSV has the same columns, numbers unformatted.
export const COLUMNS = [
  ['name', 'run'], ['method', 'method'], ['task', 'data'], ['trainable', 'trainable parameters'],
  ['memory', 'measured memory (bytes)'], ['seconds', 'time (s)'], ['steps', 'steps'],
  ['trainLoss', 'final train loss'], ['validLoss', 'final valid loss'], ['metric', 'task metric'],
];

export function loadRuns() {
  try {
    const runs = JSON.parse(localStorage.getItem(KEY) || '[]');
    return Array.isArray(runs) ? runs : [];
  } catch {
    return [];
  }
}

function saveRuns(runs) {
  try {
    localStorage.setItem(KEY, JSON.stringify(runs.slice(-MAX_RUNS)));
  } catch (e) {
    showError(`The runs could not be kept in this browser (${e.message}); they stay until the page is closed.`);
  }
}

// A run's short name from its settings: "3 · LoRA r 8 · json".
export function runName(n, config, task) {
  const method = { lora: 'LoRA', qlora: 'QLoRA', full: 'full', partial: 'partial', dpo: 'DPO' }[config.method] || config.method;
  const adapter = ['lora', 'qlora', 'dpo'].includes(config.method) ? ` r ${config.rank}` : '';
  const targets = adapter && config.targets !== 'all-linear' ? ` (${config.targets})` : '';
  return `${n} · ${method}${adapter}${targets} · ${task}`;
}

// The cells of one run, raw: numbers stay numbers (null where unknown).
export function runValues(run) {
  const last = (points) => (points?.length ? points.at(-1)[1] : null);
  const metric = run.metric ? run.metric.after : null;
  return {
    name: run.name, method: run.config.method, task: run.task, trainable: run.trainable ?? null,
    memory: run.memory ?? null, seconds: run.seconds ?? null, steps: run.losses?.length ? run.losses.at(-1)[0] : 0,
    trainLoss: last(run.losses), validLoss: last(run.valid), metric,
  };
}

function formatCell(key, v, run) {
  if (v === null || v === undefined) return '–';
  if (key === 'memory') return `${(v / 1048576).toFixed(2)} MiB`;
  if (key === 'trainable') return v.toLocaleString('en-US');
  if (key === 'seconds') return v.toFixed(1);
  if (key === 'trainLoss' || key === 'validLoss') return v.toFixed(4);
  if (key === 'metric') {
    const before = Number.isFinite(run.metric.before) ? `${(100 * run.metric.before).toFixed(1)}% → ` : '';
    return `${run.metric.label}: ${before}${(100 * v).toFixed(1)}%`;
  }
  return String(v);
}

const csvCell = (v) => {
  if (v === null || v === undefined) return '';
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

// The table as CSV: one header line, one line per run, the same figures as the table shows
// (unrounded).
export function toCsv(runs) {
  const lines = [COLUMNS.map(([, h]) => csvCell(h)).join(',')];
  for (const run of runs) {
    const v = runValues(run);
    lines.push(COLUMNS.map(([k]) => csvCell(k === 'metric' && run.metric ? `${run.metric.label} ${run.metric.before} -> ${run.metric.after}` : v[k])).join(','));
  }
  return lines.join('\n') + '\n';
}

// The loss-chart series of the ticked runs (not the one running: the chart draws that itself).
export function overlaySeries(runs, exceptId) {
  return runs
    .map((run, i) => ({ run, hue: i % HUES }))
    .filter(({ run }) => run.selected && run.id !== exceptId && run.losses?.length)
    .map(({ run, hue }) => ({ label: run.name, points: run.losses, cls: `run hue-${hue}` }));
}

// --- controller ---------------------------------------------------------------------------------
export function initRuns({ onChange }) {
  let runs = loadRuns();
  let lastSaved = 0;

  function render() {
    const table = $('#runs-table');
    const rows = runs.map((run, i) => {
      const v = runValues(run);
      const tr = html('tr', { 'data-run': run.id });
      const tick = html('input', { type: 'checkbox', 'aria-label': `overlay ${run.name} on the loss chart` });
      tick.checked = !!run.selected;
      tick.addEventListener('change', () => {
        run.selected = tick.checked;
        saveRuns(runs);
        onChange();
      });
      const swatch = html('span', { class: `swatch hue-${i % HUES}`, 'aria-hidden': 'true' });
      const first = html('td', {});
      first.append(tick, swatch);
      tr.append(first, ...COLUMNS.map(([k]) => html(k === 'name' ? 'th' : 'td', k === 'name' ? { scope: 'row', 'data-key': k } : { 'data-key': k },
        formatCell(k, v[k], run) + (k === 'name' && run.status === 'running' ? ' (running)' : run.status === 'stopped' && k === 'name' ? ' (stopped)' : ''))));
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = runs.length === 0;
    $('#runs-empty').hidden = runs.length > 0;
    $('#runs-csv').disabled = runs.length === 0;
    $('#runs-clear').disabled = runs.length === 0;
  }

  const find = (id) => runs.find((r) => r.id === id);

  const api = {
    all: () => runs,
    overlays: (exceptId) => overlaySeries(runs, exceptId),
    // A new run with these settings (the run.toml keys) on this data; returns its id.
    start(config, task) {
      const n = (runs.at(-1)?.n || 0) + 1;
      const run = { id: `${Date.now()}-${n}`, n, name: runName(n, config, task), config, task, started: Date.now(),
        losses: [], valid: [], selected: true, status: 'running' };
      runs.push(run);
      if (runs.length > MAX_RUNS) runs = runs.slice(-MAX_RUNS);
      saveRuns(runs);
      render();
      return run.id;
    },
    // The curves so far; kept every few seconds so a reload mid-run loses little.
    progress(id, losses, valid) {
      const run = find(id);
      if (!run) return;
      run.losses = losses.slice();
      run.valid = valid.slice();
      if (Date.now() - lastSaved > 3000) {
        lastSaved = Date.now();
        saveRuns(runs);
      }
    },
    // The run ended: its time, its last curves, and from the memory ledger the trainable
    // parameters and the bytes the device measured.
    finish(id, { losses, valid, seconds, ledger, stopped, effectiveRank = null }) {
      const run = find(id);
      if (!run) return;
      Object.assign(run, { losses: losses.slice(), valid: valid.slice(), seconds, effectiveRank, status: stopped ? 'stopped' : 'done' });
      const current = ledger?.rows?.find((r) => r.current && !r.measured);
      if (current) run.trainable = Math.round(current.bytes.trainable / 4);
      const measured = ledger?.measured;
      if (measured) run.memory = measured.in_use ?? measured.reserved;
      saveRuns(runs);
      render();
    },
    // A task metric measured after a run: it belongs to the newest run when that run trained on
    // the task (a metric on another task measures something else, e.g. forgetting).
    setMetric(task, label, before, after) {
      const run = runs.at(-1);
      if (!run || run.task !== task || run.status === 'running' || after === undefined) return;
      run.metric = { label, before, after };
      saveRuns(runs);
      render();
    },
    latest: () => runs.at(-1),
    render,
  };

  $('#runs-csv').addEventListener('click', () => download('tinytune-runs.csv', toCsv(runs), 'text/csv'));
  $('#runs-clear').addEventListener('click', () => {
    runs = [];
    saveRuns(runs);
    render();
    onChange();
  });
  // A run still marked running after a reload was cut short.
  for (const run of runs) if (run.status === 'running') run.status = 'stopped';
  render();
  return api;
}
