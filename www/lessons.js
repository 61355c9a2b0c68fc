// Lessons: the ideas of a finetuning course in order, each with a few plain sentences, one button
// that sets the page's controls and runs the experiment on the loaded model (the built-in one
// unless another is loaded), and the measured result with what to notice in it.
//
// A lesson's `run(ctx)` drives the page through the same controllers a visitor uses (training,
// the task metric, the Precision and Merge sections, the calculator) and returns
// `{ rows: [[measure, value, shown]], notice }`. `ctx.steps`, `ctx.batch` and `ctx.limit` come
// from the lesson panel, so an experiment can be made shorter (the tests do) or longer.

import { $, html, showError, setStatus, openSection } from './dom.js';
import { send } from './engine.js';

const pct = (x) => `${(100 * x).toFixed(0)}%`;
const num = (x, d = 4) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const mib = (b) => (Number.isFinite(b) ? `${(b / 1048576).toFixed(2)} MiB` : '–');
const gib = (b) => `${(b / 2 ** 30).toFixed(2)} GiB`;
const last = (points) => (points?.length ? points.at(-1)[1] : NaN);
const ADAPTER = { method: 'lora', rank: 8, alpha: 16, lr: 0.002, targets: 'all-linear', warmup: 0, evalEvery: 0, seqLen: 128, seed: 0 };

// Wait until `check()` is true (polling), or fail after `ms` with `what`.
async function until(check, what, ms = 600000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const LESSONS = [
  {
    id: 'prompting',
    title: 'Prompting vs finetuning',
    text: [
      'Before training anything, try asking: the task\'s instruction alone (zero-shot), then with two solved examples in front of it (few-shot).',
      'Then train a LoRA adapter on the task\'s examples and ask again with the instruction alone.',
      'The metric is the task\'s own: the share of held-out answers in the right JSON shape.',
    ],
    async run(ctx) {
      await ctx.use({ ...ADAPTER, task: 'json', batchSize: ctx.batch, steps: ctx.steps });
      const zero = await ctx.metric('json', { adapter: false, shots: 0 });
      const few = await ctx.metric('json', { adapter: false, shots: 2 });
      await ctx.train();
      const tuned = await ctx.metric('json', { adapter: true, shots: 0 });
      return {
        rows: [['zero-shot prompt', zero.score, pct(zero.score)], ['2-shot prompt', few.score, pct(few.score)],
          [`LoRA, ${ctx.steps} steps`, tuned.score, pct(tuned.score)]],
        notice: `${few.score > zero.score ? 'The examples in the prompt helped' : 'Examples in the prompt did not help: a 3.4M-parameter model has no in-context learning to speak of'}; ` +
          `${ctx.steps} steps of LoRA ${tuned.score > Math.max(zero.score, few.score) ? 'did better than both prompts' : 'have not yet beaten the prompts: train longer'}. ` +
          'Large models learn from a prompt; small ones need their weights changed.',
      };
    },
  },
  {
    id: 'cpt-vs-sft',
    title: 'Continued pretraining vs supervised finetuning',
    text: [
      'The objective is the same next-token loss; what differs is which tokens carry it.',
      'In continued pretraining on plain text every token is learned. In supervised finetuning on prompt/completion pairs only the answer is: the prompt is context.',
      'The Data section\'s preview shows it: learned tokens highlighted, context grey.',
    ],
    async run(ctx) {
      const share = async (task) => {
        await ctx.use({ task });
        await until(() => $('#data-preview').dataset.learned !== undefined && !$('#data-preview').hidden && ctx.training.data()?.source === task, 'the preview');
        const box = $('#data-preview');
        return Number(box.dataset.learned) / Math.max(1, Number(box.dataset.tokens));
      };
      delete $('#data-preview').dataset.learned;
      const cpt = await share('corpus');
      delete $('#data-preview').dataset.learned;
      const sft = await share('json');
      return {
        rows: [['story corpus (.txt): tokens that carry the loss', cpt, pct(cpt)], ['json task (prompt/completion): tokens that carry the loss', sft, pct(sft)]],
        notice: `Plain text trains on ${pct(cpt)} of its tokens (all but the first of each window); the task on ${pct(sft)}: only the answers and their end-of-sequence token. ` +
          'Same loss function, different targets. That is the whole difference between the two.',
      };
    },
  },
  {
    id: 'methods',
    title: 'Full vs partial vs LoRA vs QLoRA',
    text: [
      'Four ways to finetune the same model on the same data: every weight, only the last block, low-rank adapters, and adapters over a 4-bit base.',
      'Each run is added to the Runs table with its trainable parameters, the memory the device measured, its time and its final loss.',
    ],
    async run(ctx) {
      const rows = [];
      for (const method of ['full', 'partial', 'lora', 'qlora']) {
        const run = await ctx.trainWith({ ...ADAPTER, task: 'json', method, lr: method === 'full' || method === 'partial' ? 0.0005 : 0.002, partialLayers: 1, batchSize: ctx.batch, steps: ctx.steps });
        rows.push([`${method}: trainable parameters`, run.trainable, (run.trainable ?? NaN).toLocaleString('en-US')],
          [`${method}: measured memory`, run.memory, mib(run.memory)], [`${method}: final train loss`, last(run.losses), num(last(run.losses))]);
      }
      const get = (m, what) => rows.find((r) => r[0] === `${m}: ${what}`)[1];
      const loss = (m) => num(get(m, 'final train loss'), 3);
      return {
        rows,
        notice: `Full finetuning trains ${get('full', 'trainable parameters').toLocaleString('en-US')} parameters, LoRA ${get('lora', 'trainable parameters').toLocaleString('en-US')} ` +
          `(${pct(get('lora', 'trainable parameters') / get('full', 'trainable parameters'))}). Gradients and optimizer moments follow the trainable count, which is where LoRA saves memory; ` +
          `QLoRA saves on the frozen weights as well (${mib(get('qlora', 'measured memory'))} measured, against ${mib(get('lora', 'measured memory'))} for LoRA). ` +
          `Final losses after ${ctx.steps} steps: full ${loss('full')}, partial ${loss('partial')}, LoRA ${loss('lora')}, QLoRA ${loss('qlora')}.`,
      };
    },
  },
  {
    id: 'rank',
    title: 'Rank and alpha',
    text: [
      'r is how many directions the update ΔW = B·A may use; alpha scales it (by α / r), so a larger r does not by itself mean a larger update.',
      'A sweep over r with α = 2r: the final loss and the effective rank the adapter actually used (from the singular values of ΔW).',
    ],
    async run(ctx) {
      const rows = [];
      for (const rank of [1, 4, 16, 64]) {
        const run = await ctx.trainWith({ ...ADAPTER, task: 'json', rank, alpha: 2 * rank, batchSize: ctx.batch, steps: ctx.steps });
        rows.push([`r ${rank}: final train loss`, last(run.losses), num(last(run.losses))], [`r ${rank}: effective rank`, run.effectiveRank, num(run.effectiveRank, 2)]);
      }
      const eff = rows.filter((r) => r[0].endsWith('effective rank')).map((r) => r[1]);
      const losses = rows.filter((r) => r[0].endsWith('loss')).map((r) => r[1]);
      return {
        rows,
        notice: `Effective ranks for r = 1, 4, 16, 64: ${eff.map((e) => num(e, 1)).join(', ')}` +
          `${eff[3] < 32 ? ': the adapter uses far fewer directions than it is given' : ''}. Final losses: ${losses.map((l) => num(l, 3)).join(', ')}. ` +
          'Where the loss stops improving as r grows, extra rank buys nothing; that is why r 8 or 16 is the usual choice.',
      };
    },
  },
  {
    id: 'targets',
    title: 'Where to put LoRA',
    text: [
      'Adapters can go on some linear layers or all of them: the original LoRA paper adapted only the attention\'s query and value projections.',
      'Four runs with the same rank: q and v, all of attention, the MLP, and every linear layer.',
    ],
    async run(ctx) {
      const rows = [];
      for (const [name, targets] of [['q, v', 'q_proj,v_proj'], ['attention', 'q_proj,k_proj,v_proj,o_proj'], ['MLP', 'gate_proj,up_proj,down_proj'], ['all-linear', 'all-linear']]) {
        const run = await ctx.trainWith({ ...ADAPTER, task: 'json', targets, batchSize: ctx.batch, steps: ctx.steps });
        rows.push([`${name}: trainable parameters`, run.trainable, (run.trainable ?? NaN).toLocaleString('en-US')], [`${name}: final train loss`, last(run.losses), num(last(run.losses))]);
      }
      const losses = rows.filter((r) => r[0].endsWith('loss'));
      const best = losses.reduce((a, b) => (b[1] < a[1] ? b : a));
      return { rows, notice: `Lowest loss here: ${best[0].split(':')[0]}. More targets mean more trainable parameters; the MLP holds most of a block's weights. QLoRA's authors found adapting every linear layer mattered most.` };
    },
  },
  {
    id: 'memory',
    title: 'Memory math',
    text: [
      'Training memory is frozen weights, plus trainable weights, their gradients and the optimizer\'s two AdamW moments, plus the activations kept for the backward pass.',
      'The calculator applies the ledger\'s formula to any config.json. The course\'s claim: QLoRA finetunes a 65B model on one 48 GB GPU. Under which assumptions?',
    ],
    async run(ctx) {
      openSection('calculator-section');
      const at = async (bf16, checkpointing) => {
        ctx.calculator.set({ '#calc-preset': 'llama-2-65b', '#calc-batch': 1, '#calc-seq': 512, '#calc-rank': 16, '#calc-targets': 'all-linear', '#calc-bf16': bf16, '#calc-ckpt': checkpointing });
        const r = await ctx.calculator.run();
        return Object.fromEntries(r.rows.map((row) => [row.method, row.total]));
      };
      const plain = await at(false, false);
      const course = await at(true, true);
      const q = 'QLoRA (NF4 base)';
      return {
        rows: [['full finetuning, f32, everything kept', plain.full, gib(plain.full)], ['LoRA, f32, everything kept', plain.LoRA, gib(plain.LoRA)],
          ['QLoRA, f32 activations, everything kept', plain[q], gib(plain[q])], ['QLoRA, bf16 activations, checkpointing', course[q], gib(course[q])]],
        notice: `Full finetuning of Llama-2-65B needs ${gib(plain.full)}. QLoRA needs ${gib(course[q])} only with bf16 activations and gradient checkpointing ` +
          `(${course[q] < 48e9 ? 'under' : 'over'} 48 GB); keep every activation in f32 and it is ${gib(plain[q])}. The 4-bit weights are the start, not the whole story.`,
      };
    },
  },
  {
    id: 'precision',
    title: 'Precision and quantization',
    text: [
      'The same weights in fewer bits: fp16 and bf16 halve them, int8 and fp8 quarter them, NF4 and FP4 use 4 bits a weight plus one scale per block of 64.',
      'The Precision section measures one matrix\'s error in each format and the model\'s held-out loss with every linear weight stored that way.',
    ],
    async run(ctx) {
      // The model's own domain, the stories: its held-out loss there is what quantization costs.
      await ctx.use({ task: 'corpus' });
      openSection('precision-section');
      await until(() => !$('#precision-table').hidden && !$('#precision-loss').disabled, 'the Precision section');
      $('#precision-limit').value = String(Math.max(ctx.limit, 2));
      $('#precision-loss').click();
      await until(() => /Held-out loss on|Measuring stopped/.test($('#precision-status').textContent), 'the held-out losses');
      if (/stopped/.test($('#precision-status').textContent)) throw new Error($('#precision-status').textContent);
      const rows = [...document.querySelectorAll('#precision-table tbody tr')].map((tr) => {
        const loss = Number(tr.querySelector('td.loss').dataset.value);
        return [`${tr.dataset.format}: ${tr.querySelector('td.bits').textContent} bits, held-out loss`, loss, num(loss)];
      });
      const by = Object.fromEntries(rows.map((r) => [r[0].split(':')[0], r[1]]));
      const cost = (f) => by[f] - by.fp32;
      const worst8 = Math.max(cost('fp16'), cost('bf16'), cost('int8'), cost('fp8_e4m3'));
      return {
        rows,
        notice: `Against fp32 (${num(by.fp32)}), formats of 8 bits or more cost at most ${num(worst8)} in loss; nf4 costs ${num(cost('nf4'))}, fp4 ${num(cost('fp4'))}. ` +
          `${Math.abs(cost('nf4')) < Math.abs(cost('fp4')) ? 'NF4, whose 16 levels follow the weights\' bell shape, lost less than FP4.' : 'Here FP4 did as well as NF4: on a model this small the difference is within the noise.'} ` +
          'Double quantization (nf4_dq) saves 0.37 bits a weight for almost nothing.',
      };
    },
  },
  {
    id: 'forgetting',
    title: 'Forgetting',
    text: [
      'Finetuning on one task can cost the model what it knew. Measure the built-in model\'s perplexity on its own story corpus, and its score on a second task, before and after a LoRA on the json task.',
      'Switching the adapter off gives the base back exactly: forgetting lives in the adapter.',
    ],
    async run(ctx) {
      const stories = (await (await fetch('assets/builtin/corpus/valid.txt')).text()).split('\n').filter((l) => l.trim()).slice(0, 16);
      const ppl = async (on) => {
        await send('setAdapter', { on });
        try {
          return Math.exp((await send('evalLoss', { texts: stories, seqLen: 128 })).report.loss);
        } finally {
          await send('setAdapter', { on: true });
        }
      };
      await ctx.use({ ...ADAPTER, task: 'json', batchSize: ctx.batch, steps: ctx.steps });
      await ctx.train();
      const before = await ppl(false);
      const after = await ppl(true);
      const qaBefore = await ctx.metric('style', { adapter: false });
      const qaAfter = await ctx.metric('style', { adapter: true });
      return {
        rows: [['story perplexity, base', before, num(before, 2)], ['story perplexity, after the json LoRA', after, num(after, 2)],
          ['style task metric, base', qaBefore.score, pct(qaBefore.score)], ['style task metric, after the json LoRA', qaAfter.score, pct(qaAfter.score)]],
        notice: `The stories' perplexity went from ${num(before, 2)} to ${num(after, 2)}${after > before ? ': the adapter made the model worse at what it knew' : ''}. ` +
          'Mixing some of the old data into the new, a lower rank or fewer steps all reduce forgetting.',
      };
    },
  },
  {
    id: 'dpo',
    title: 'Preference finetuning (DPO)',
    text: [
      'Supervised finetuning shows the right answer; preference finetuning shows two answers and says which is better.',
      'DPO trains an adapter so the model ranks the chosen answer above the rejected one, measured against the base with the adapter off (no second model in memory).',
      'The metric asks the model itself which of a held-out pair it finds more probable.',
    ],
    async run(ctx) {
      await ctx.use({ ...ADAPTER, task: 'pirate-prefs', method: 'dpo', beta: 0.1, lr: 0.005, batchSize: ctx.batch, steps: ctx.steps });
      const before = await ctx.metric('pirate-prefs', { adapter: false });
      const run = await ctx.train();
      const after = await ctx.metric('pirate-prefs', { adapter: true });
      const style = (r) => r.metrics.find((m) => m.kind === 'style_markers').score;
      return {
        rows: [['prefers the chosen, base', before.score, pct(before.score)], ['prefers the chosen, after DPO', after.score, pct(after.score)],
          ['pirate markers in its own output, after DPO', style(after.report), pct(style(after.report))], ['final DPO loss', last(run.losses), num(last(run.losses))]],
        notice: `DPO moved the model's own ranking of held-out pairs from ${pct(before.score)} to ${pct(after.score)}. ` +
          (style(after.report) < 0.5
            ? 'It did not teach the answer\'s format: the model still does not write "Ahoy! …, arr!" itself. DPO ranks answers the model can already produce, which is why it usually follows supervised finetuning.'
            : 'The model also writes in the style now.'),
      };
    },
  },
  {
    id: 'merging',
    title: 'Model merging',
    text: [
      'Two adapters trained on different tasks can be combined into one, with no further training: add them (linear), or resolve where their signs disagree first (TIES).',
      'The Merge section does it; the interference table shows what each task keeps once the adapters share one set of weights.',
    ],
    async run(ctx) {
      openSection('merge-section');
      const trained = [];
      for (const [task, seed] of [['json', 1], ['style', 2]]) {
        await ctx.trainWith({ ...ADAPTER, task, seed, batchSize: ctx.batch, steps: ctx.steps });
        trained.push(task);
        await until(() => [...document.querySelectorAll('#merge-adapters .merge-row')].some((r) => r.textContent.includes(`task ${task}`)), 'the kept adapter');
      }
      // The newest adapter of each task (names end in their time).
      const rows = [...document.querySelectorAll('#merge-adapters .merge-row')];
      for (const r of rows) r.querySelector('input[type=checkbox]').checked = false;
      for (const task of trained) {
        const newest = rows.filter((r) => r.textContent.includes(`task ${task}`)).sort((a, b) => a.dataset.name.localeCompare(b.dataset.name)).at(-1);
        newest.querySelector('input[type=checkbox]').checked = true;
        newest.querySelector('input[type=checkbox]').dispatchEvent(new Event('change', { bubbles: true }));
      }
      $('#merge-method').value = 'ties';
      $('#merge-method').dispatchEvent(new Event('change'));
      await until(() => !$('#merge-run').disabled, 'the Merge button');
      $('#merge-run').click();
      await until(() => /Merged 2 adapters/.test($('#merge-status').textContent), 'the merge');
      $('#merge-limit').value = String(ctx.limit);
      await until(() => !$('#merge-interference').disabled, 'the interference button');
      $('#merge-interference').click();
      await until(() => /Interference measured/.test($('#merge-status').textContent), 'the interference table');
      const cells = [...document.querySelectorAll('#merge-table tbody tr')].flatMap((tr) =>
        [...tr.querySelectorAll('td[data-column]')].map((td) => [`${tr.dataset.task ?? ''} ${tr.dataset.measure ?? ''}: ${td.dataset.column}`.trim(), Number(td.dataset.value), td.textContent]));
      return { rows: cells, notice: 'Read across a row: a task\'s score with its own adapter alone, with the other adapter alone, and with the merge. What the merge loses against the adapter alone is the interference.' };
    },
  },
  {
    id: 'serving',
    title: 'Serving merged vs separate adapters',
    text: [
      'An adapter can be merged into the weights (no cost per token, one copy of the model per adapter) or kept separate (one base serves many adapters, a little extra work per token).',
      'The Serving panel measures four ways on this device: merged, base plus one adapter, one batch mixing adapters (multi-LoRA), and swapping adapters between requests.',
    ],
    async run(ctx) {
      openSection('merge-section');
      const ticked = () => document.querySelectorAll('#merge-adapters input[type=checkbox]:checked').length;
      if (ticked() < 2) {
        for (const [task, seed] of [['json', 1], ['style', 2]]) await ctx.trainWith({ ...ADAPTER, task, seed, batchSize: ctx.batch, steps: ctx.steps });
        await until(() => document.querySelectorAll('#merge-adapters .merge-row').length >= 2, 'two kept adapters');
        for (const r of [...document.querySelectorAll('#merge-adapters .merge-row')].slice(-2)) {
          const c = r.querySelector('input[type=checkbox]');
          c.checked = true;
          c.dispatchEvent(new Event('change', { bubbles: true }));
        }
      }
      $('#serving-tokens').value = String(Math.max(4, Math.min(16, ctx.steps * 2)));
      await until(() => !$('#serving-run').disabled, 'the serving button');
      $('#serving-table').hidden = true;
      $('#serving-run').click();
      await until(() => !$('#serving-table').hidden && /prompts/.test($('#serving-status').textContent), 'the serving table');
      const rows = [...document.querySelectorAll('#serving-table tbody tr')].map((tr) => {
        const [mode, tps] = [...tr.children].map((c) => c.textContent);
        return [`${mode}: tokens/s`, Number.parseFloat(tps), tps];
      });
      const fastest = rows.reduce((a, b) => (b[1] > a[1] ? b : a));
      return { rows, notice: `Fastest here: ${fastest[0].split(':')[0]}. Merged weights cost nothing per token but need a copy of the model per adapter; one base with separate adapters serves them all from one copy, and a multi-LoRA batch serves several at once.` };
    },
  },
];

export function initLessons({ state, training, calculator }) {
  const panel = $('#lesson-panel');
  let current = null;
  let running = false;

  const ctx = {
    state, training, calculator,
    get steps() { return Math.max(1, Number($('#lesson-steps').value) || 1); },
    get limit() { return Math.max(1, Number($('#lesson-limit').value) || 1); },
    get batch() { return Math.max(1, Number($('#lesson-batch').value) || 1); },
    // Set controls (the page's state, so the address and the form follow) and wait for the data.
    async use(patch) {
      state.set(patch);
      if (patch.task) {
        await training.chooseData();
        await until(() => training.data()?.source === patch.task, `the ${patch.task} data`);
      }
    },
    // Train with the current settings; resolves to the run as the Runs table keeps it.
    async train() {
      await training.train();
      const run = training.runs().at(-1);
      if (!run || run.status !== 'done') throw new Error(`the run did not finish (${run?.status ?? 'no run'}): ${$('#error').hidden ? '' : $('#error').textContent}`);
      return run;
    },
    async trainWith(patch) {
      await this.use(patch);
      return this.train();
    },
    // The task's main metric on its first `limit` test examples: {score, report}. A score with
    // the adapter on goes into the Runs table, beside the base's (no shots) when it was measured.
    base: {},
    async metric(task, { adapter = true, shots = 0 } = {}) {
      const r = await send('taskMetric', { task, limit: this.limit, adapter, shots });
      const score = r.report.metrics[0].score;
      if (!adapter && !shots) this.base[task] = score;
      if (adapter) training.recordMetric(task, r.report.metrics[0].label || r.report.metrics[0].kind, this.base[task] ?? NaN, score);
      return { score, report: r.report };
    },
  };

  function show(lesson) {
    current = lesson;
    for (const b of document.querySelectorAll('#lesson-list button')) b.setAttribute('aria-current', String(b.dataset.lesson === lesson.id));
    $('#lesson-title').textContent = lesson.title;
    $('#lesson-text').replaceChildren(...lesson.text.map((t) => html('p', {}, t)));
    $('#lesson-result').replaceChildren();
    $('#lesson-notice').textContent = '';
    setStatus($('#lesson-status'), 'idle', '');
    panel.dataset.lesson = lesson.id;
    panel.hidden = false;
  }

  async function run() {
    if (!current || running) return;
    if (training.busy()) {
      showError('A run is in progress: stop it or wait for it to finish first.');
      return;
    }
    running = true;
    $('#lesson-run').disabled = true;
    const lesson = current;
    ctx.base = {};
    const status = $('#lesson-status');
    setStatus(status, 'running', `Running "${lesson.title}"… (the sections below show each step)`);
    const started = performance.now();
    try {
      const { rows, notice } = await lesson.run(ctx);
      const table = html('table', { class: 'data', 'data-lesson': lesson.id });
      const body = html('tbody');
      for (const [measure, value, shown] of rows) {
        const tr = html('tr', { 'data-measure': measure });
        tr.append(html('th', { scope: 'row' }, measure), html('td', { 'data-value': String(value) }, shown));
        body.append(tr);
      }
      table.append(body);
      $('#lesson-result').replaceChildren(table);
      $('#lesson-notice').textContent = `What to notice: ${notice}`;
      setStatus(status, 'done', `Measured on this device in ${((performance.now() - started) / 1000).toFixed(0)} s.`);
    } catch (e) {
      setStatus(status, 'error', `The experiment stopped: ${e.message}`);
      showError(e.message);
    } finally {
      running = false;
      $('#lesson-run').disabled = false;
    }
  }

  $('#lesson-list').replaceChildren(...LESSONS.map((l) => {
    const li = html('li');
    const b = html('button', { type: 'button', 'data-lesson': l.id, class: 'link' }, l.title);
    b.addEventListener('click', () => show(l));
    li.append(b);
    return li;
  }));
  $('#lesson-run').addEventListener('click', run);
  show(LESSONS[0]);
  return { show: (id) => show(LESSONS.find((l) => l.id === id)), run };
}
