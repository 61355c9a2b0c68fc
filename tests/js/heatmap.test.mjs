// The heatmap's colour maths, without a DOM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { colorFor, pixels, sharedScale, formatScale } from '../../www/render/heatmap.js';

test('zero is near white', () => {
  const [r, g, b] = colorFor(0, 1);
  assert.ok(Math.min(r, g, b) >= 240, `${[r, g, b]}`);
});

test('negatives are blue, positives red, and both deepen with |v|', () => {
  const [nr, , nb] = colorFor(-0.5, 1), [pr, , pb] = colorFor(0.5, 1);
  assert.ok(nb > nr, 'negative: b > r');
  assert.ok(pr > pb, 'positive: r > b');
  const [fr, , fb] = colorFor(-1, 1);
  assert.ok(fb - fr > nb - nr, 'more negative is bluer');
  // The ends are ColorBrewer RdBu's extremes.
  assert.deepEqual(colorFor(-1, 1), [33, 102, 172]);
  assert.deepEqual(colorFor(1, 1), [178, 24, 43]);
});

test('values beyond ±maxAbs clamp to the ends, and the scale is relative to maxAbs', () => {
  assert.deepEqual(colorFor(5, 1), colorFor(1, 1));
  assert.deepEqual(colorFor(-Infinity, 1), colorFor(-1, 1));
  assert.deepEqual(colorFor(0.006, 0.012), colorFor(0.5, 1));
});

test('the scale is a signed square root: a quarter of max is half way to the end colour', () => {
  // v / max = 0.25 → √0.25 = 0.5 → exactly the fourth RdBu stop; −0.25 → the second.
  assert.deepEqual(colorFor(0.25, 1), [244, 165, 130]);
  assert.deepEqual(colorFor(-0.25, 1), [146, 197, 222]);
  // A tenth of max is still clearly coloured (not within 10 of white).
  assert.ok(Math.min(...colorFor(0.1, 1)) < 237);
});

test('NaN is a neutral grey', () => {
  const [r, g, b] = colorFor(NaN, 1);
  assert.ok(r === g && g === b && r > 100 && r < 220);
});

test('pixels gives opaque RGBA, row-major', () => {
  // 2 rows × 3 cols; entry (row 1, col 2) is the 6th value, so its pixel starts at byte 5·4 = 20.
  const px = pixels([0, 0, 0, 0, 0, -2], 2, 3, 2);
  assert.equal(px.length, 2 * 3 * 4);
  assert.deepEqual([...px.slice(20, 24)], [33, 102, 172, 255]);
  assert.deepEqual([...px.slice(0, 4)], [...colorFor(0, 2), 255]);
  assert.throws(() => pixels([1, 2], 2, 3, 1), /2 values cannot fill 2 × 3/);
});

test('sharedScale is the largest finite |v| over all matrices, and never 0', () => {
  assert.equal(sharedScale({ values: [0.1, -0.3] }, { values: new Float32Array([0.2, NaN, -Infinity]) }), 0.3);
  assert.equal(sharedScale({ values: [0, 0] }), 1e-12);
  assert.equal(sharedScale(), 1e-12);
});

test('scale labels stay short', () => {
  assert.equal(formatScale(0.01234), '0.012');
  assert.equal(formatScale(1.5e-5), '1.5e-5');
  assert.equal(formatScale(3), '3');
});
