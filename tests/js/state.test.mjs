// The URL hash is the whole UI state: it must round-trip, stay short, and survive bad links.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS, LIMITS, decodeHash, encodeHash, createStore } from '../../www/state.js';

test('the default state encodes to an empty hash, and an empty hash decodes to the defaults', () => {
  assert.equal(encodeHash(DEFAULTS), '');
  for (const h of ['', '#', undefined]) assert.deepEqual(decodeHash(h), { state: { ...DEFAULTS }, problems: [] });
});

test('only changed keys are encoded, in the defaults\' order, whatever the order they were set in', () => {
  const s = { ...DEFAULTS, seed: 7, rank: 4, prompt: 'Hi & bye = 100% #1+1' };
  const h = encodeHash(s);
  assert.match(h, /^#rank=4&seed=7&prompt=/);
  assert.deepEqual(decodeHash(h), { state: s, problems: [] });
});

test('numbers, strings and booleans keep their types through a round trip', () => {
  const defaults = { n: 1, s: 'x', b: false };
  const s = { n: -2.5e-7, s: '', b: true };
  assert.equal(encodeHash(s, defaults), '#n=-2.5e-7&s=&b=true');
  assert.deepEqual(decodeHash(encodeHash(s, defaults), defaults).state, s);
  assert.deepEqual(decodeHash('#b=0&n=1e3', defaults).state, { n: 1000, s: 'x', b: false });
});

test('random states round-trip exactly', () => {
  // A seeded generator (mulberry32) keeps a failure reproducible.
  let a = 12345;
  const rand = () => { a = (a + 0x6d2b79f5) | 0; let t = Math.imul(a ^ (a >>> 15), 1 | a); t ^= t + Math.imul(t ^ (t >>> 7), 61 | t); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
  const chars = 'aZ09 &=#%+?/,;:é€😀\n\t"\'<>';
  for (let i = 0; i < 500; i++) {
    const s = { ...DEFAULTS };
    for (const [k, v] of Object.entries(DEFAULTS)) {
      if (rand() < 0.5) continue;
      const l = LIMITS[k];
      if (typeof v === 'number' && l?.integer) s[k] = l.min + Math.floor(rand() * (l.max - l.min + 1));
      else if (typeof v === 'number' && l) s[k] = l.min + rand() * (l.max - l.min);
      else if (typeof v === 'number') s[k] = rand() < 0.5 ? Math.floor(rand() * 1e6) - 5e5 : (rand() - 0.5) * 10 ** Math.floor(rand() * 20 - 10);
      else if (typeof v === 'boolean') s[k] = rand() < 0.5;
      else s[k] = Array.from({ length: Math.floor(rand() * 12) }, () => [...chars][Math.floor(rand() * [...chars].length)]).join('');
    }
    const h = encodeHash(s);
    assert.deepEqual(decodeHash(h), { state: s, problems: [] }, h);
  }
});

test('an unparsable number keeps its default and says so', () => {
  const { state, problems } = decodeHash('#rank=abc&steps=&alpha=32');
  assert.equal(state.rank, 8);
  assert.equal(state.steps, 20);
  assert.equal(state.alpha, 32);
  assert.deepEqual(problems, ["rank: 'abc' is not a number; using 8", "steps: '' is not a number; using 20"]);
});

test('every number in the state has a range, and a value outside it keeps its default and says so', () => {
  for (const [k, v] of Object.entries(DEFAULTS)) {
    if (typeof v !== 'number') continue;
    assert.ok(LIMITS[k], `${k} has limits`);
    assert.ok(v >= LIMITS[k].min && v <= LIMITS[k].max, `${k}'s default is in range`);
  }
  const { state, problems } = decodeHash('#rank=1000000&batchSize=1e9&seqLen=2.5&steps=-1&topP=0.5');
  assert.deepEqual(state, { ...DEFAULTS, topP: 0.5 });
  assert.deepEqual(problems, [
    'rank: 1000000 is outside 1…1024; using 8',
    'batchSize: 1000000000 is outside 1…512; using 8',
    'seqLen: 2.5 is not a whole number; using 128',
    'steps: -1 is outside 1…100000; using 20',
  ]);
});

test('an unknown key is ignored and reported', () => {
  const { state, problems } = decodeHash('#rnak=4&lr=0.01');
  assert.deepEqual(state, { ...DEFAULTS, lr: 0.01 });
  assert.deepEqual(problems, ["unknown setting 'rnak' ignored"]);
});

test('a bad boolean keeps its default and says so', () => {
  const { state, problems } = decodeHash('#on=maybe', { on: true });
  assert.deepEqual(state, { on: true });
  assert.deepEqual(problems, ["on: 'maybe' is not true or false; using true"]);
});

test('the store merges patches and tells subscribers which keys changed, and only when some did', () => {
  const store = createStore(DEFAULTS);
  const heard = [];
  const unsubscribe = store.subscribe((state, changed) => heard.push([state.rank, state.seed, changed]));
  store.set({ rank: 4, seed: 0 });
  store.set({ rank: 4 });
  assert.deepEqual(heard, [[4, 0, ['rank']]]);
  assert.equal(store.get().alpha, 16);
  assert.equal(DEFAULTS.rank, 8, 'the defaults are never mutated');
  unsubscribe();
  store.set({ rank: 2 });
  assert.equal(heard.length, 1);
  assert.equal(store.get().rank, 2);
});
