//! The user's examples as the model's rows: a seeded validation split, and batches padded or
//! packed to the sequence length, with the per-token loss weights.

use crate::rng::Rng;
use crate::train::data::Example;

/// Shuffle `examples` with `seed` and hold out `valid_fraction` of them: `(train, valid)`.
/// When `valid_fraction > 0` and there are at least 2 examples, `valid` gets at least 1 and
/// `train` keeps at least 1. Both come back in the shuffled order.
pub fn split(mut examples: Vec<Example>, valid_fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let mut rng = Rng::new(seed);
    // Fisher–Yates; the modulo bias is below 2^-40 for any data that fits in memory.
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        examples.swap(i, j);
    }
    let n_valid =
        if valid_fraction > 0.0 && n >= 2 { ((n as f64 * valid_fraction).round() as usize).clamp(1, n - 1) } else { 0 };
    let valid = examples.split_off(n - n_valid);
    (examples, valid)
}

/// Rows for the model, `batch_size` rows a batch (the last batch may have fewer).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[B][T]` inputs.
    pub ids: Vec<Vec<u32>>,
    /// `[B][T]` the next token after each input.
    pub targets: Vec<Vec<u32>>,
    /// `[B][T]` 1 where the target counts in the loss, else 0.
    pub weights: Vec<Vec<f32>>,
    /// `[B][T]` true for a real token, false for padding.
    pub pad: Vec<Vec<bool>>,
}

/// Cut examples into batches of `batch_size` rows (0 is taken as 1).
///
/// - `pack = false`: each example is a row (cut to `seq_len + 1` tokens); rows are right-padded
///   with `pad_id` to the longest row of their batch, with weight 0 there.
/// - `pack = true`: all examples are concatenated into one stream and cut into rows of
///   `seq_len + 1` tokens, so no compute is spent on padding (only the last row is padded).
///   Attention crosses example boundaries: a token can see the end of the example before it.
///   The loss flags travel with the tokens; the first token of each row has nothing before it
///   in the row, so it is not predicted even when flagged.
///
/// A row of `n + 1` tokens gives `T = n` inputs `ids[..n]`, targets `ids[1..]`, and weights
/// `target[1..]`.
pub fn batches(examples: &[Example], batch_size: usize, pack: bool, seq_len: usize, pad_id: u32) -> Vec<Batch> {
    let limit = seq_len.max(1) + 1;
    let rows: Vec<(Vec<u32>, Vec<bool>)> = if pack {
        let ids: Vec<u32> = examples.iter().flat_map(|e| e.ids.iter().copied()).collect();
        let target: Vec<bool> = examples.iter().flat_map(|e| e.target.iter().copied()).collect();
        ids.chunks(limit).zip(target.chunks(limit)).map(|(i, t)| (i.to_vec(), t.to_vec())).collect()
    } else {
        examples
            .iter()
            .map(|e| {
                let n = e.ids.len().min(limit);
                (e.ids[..n].to_vec(), e.target[..n].to_vec())
            })
            .collect()
    };
    // A row of one token predicts nothing.
    let rows: Vec<_> = rows.into_iter().filter(|(ids, _)| ids.len() >= 2).collect();
    rows.chunks(batch_size.max(1)).map(|chunk| rows_batch(chunk, pad_id)).collect()
}

impl Batch {
    /// The same rows right-padded to `t` inputs each (no shorter than they are), with `pad_id`
    /// and weight 0 in the new places. The loss is the same: the added tokens come after every
    /// real one, so causal attention never lets a real token see them, and they carry no weight.
    pub fn padded_to(&self, t: usize, pad_id: u32) -> Batch {
        Batch { ids: extend(&self.ids, t, pad_id), targets: extend(&self.targets, t, pad_id), weights: extend(&self.weights, t, 0.0), pad: extend(&self.pad, t, false) }
    }
}

/// Each row extended with `fill` to `t` values (a longer row is left as it is).
fn extend<T: Copy>(rows: &[Vec<T>], t: usize, fill: T) -> Vec<Vec<T>> {
    rows.iter().map(|r| r.iter().copied().chain(std::iter::repeat_n(fill, t.saturating_sub(r.len()))).collect()).collect()
}

/// How many inputs a row of `t` is padded to on a GPU: the next multiple of [`GPU_LENGTH_STEP`],
/// but never past `context` (unless `t` already is).
///
/// A GPU backend compiles a kernel for each vector width and tiling it meets, and chooses them
/// from the shapes, the sequence length among them. Rows padded to the longest in their batch
/// change length from step to step: on lavapipe the first steps of a tiny model each compiled a
/// new set (1–3 s a step where its later steps took 0.3–0.4 s). Rounded up, a run meets a few
/// lengths, all divisible by 16, and its later steps took 0.18 s (benches/README.md, "Rows
/// padded to a multiple of 16 on a GPU").
pub fn gpu_length(t: usize, context: usize) -> usize {
    t.next_multiple_of(GPU_LENGTH_STEP).min(context.max(t))
}

/// The granularity of [`gpu_length`].
pub const GPU_LENGTH_STEP: usize = 16;

/// Rows (ids, target flags) as one batch, right-padded with `pad_id` to the longest.
pub(crate) fn rows_batch(rows: &[(Vec<u32>, Vec<bool>)], pad_id: u32) -> Batch {
    let t = rows.iter().map(|(ids, _)| ids.len() - 1).max().unwrap_or(0);
    let mut b = Batch { ids: vec![], targets: vec![], weights: vec![], pad: vec![] };
    for (ids, target) in rows {
        let n = ids.len() - 1;
        let fill = t - n;
        b.ids.push(ids[..n].iter().copied().chain(std::iter::repeat_n(pad_id, fill)).collect());
        b.targets.push(ids[1..].iter().copied().chain(std::iter::repeat_n(pad_id, fill)).collect());
        b.weights.push(
            target[1..].iter().map(|&x| if x { 1.0 } else { 0.0 }).chain(std::iter::repeat_n(0.0, fill)).collect(),
        );
        b.pad.push(std::iter::repeat_n(true, n).chain(std::iter::repeat_n(false, fill)).collect());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(ids: &[u32], target: &[bool]) -> Example {
        Example::new(ids.to_vec(), target.to_vec())
    }

    #[test]
    fn split_holds_out_the_rounded_fraction_but_at_least_one_and_never_all() {
        let ten: Vec<Example> = (0..10).map(|i| example(&[i, i], &[true, true])).collect();
        let sizes = |v: Vec<Example>, f: f64| {
            let (t, v) = split(v, f, 1);
            (t.len(), v.len())
        };
        assert_eq!(sizes(ten.clone(), 0.2), (8, 2));
        assert_eq!(sizes(ten.clone(), 0.01), (9, 1)); // 0.1 rounds to 0, raised to 1
        assert_eq!(sizes(ten.clone(), 1.0), (1, 9)); // train keeps one
        assert_eq!(sizes(ten.clone(), 0.0), (10, 0));
        assert_eq!(sizes(ten[..1].to_vec(), 0.5), (1, 0)); // one example cannot be split
        assert_eq!(sizes(vec![], 0.5), (0, 0));
    }

    #[test]
    fn split_is_a_seeded_shuffle_that_loses_nothing() {
        let ten: Vec<Example> = (0..10).map(|i| example(&[i, i], &[true, true])).collect();
        let (t, v) = split(ten.clone(), 0.3, 42);
        assert_eq!(split(ten.clone(), 0.3, 42), (t.clone(), v.clone()));
        let mut all: Vec<u32> = t.iter().chain(&v).map(|e| e.ids[0]).collect();
        assert_ne!(all, (0..10).collect::<Vec<_>>(), "seed 42 should move something");
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn unpacked_rows_are_padded_to_the_longest_in_their_batch_with_weight_zero() {
        let examples = [
            example(&[1, 2, 3, 4], &[false, false, true, true]),
            example(&[5, 6, 7, 8, 9, 10], &[true; 6]),
            example(&[11, 12, 13], &[false, true, true]),
        ];
        let b = batches(&examples, 2, false, 64, 0);
        assert_eq!(b.len(), 2);
        // Rows of 4 and 6 tokens give 3 and 5 predictions: T = 5.
        assert_eq!(b[0].ids, [vec![1, 2, 3, 0, 0], vec![5, 6, 7, 8, 9]]);
        assert_eq!(b[0].targets, [vec![2, 3, 4, 0, 0], vec![6, 7, 8, 9, 10]]);
        // weight[t] is target[t + 1]: token 2 is prompt, tokens 3 and 4 are learned.
        assert_eq!(b[0].weights, [vec![0.0, 1.0, 1.0, 0.0, 0.0], vec![1.0; 5]]);
        assert_eq!(b[0].pad, [vec![true, true, true, false, false], vec![true; 5]]);
        // The last batch has the one row left, with no padding.
        assert_eq!(b[1].ids, [vec![11, 12]]);
        assert_eq!(b[1].weights, [vec![1.0, 1.0]]);
    }

    #[test]
    fn unpacked_rows_longer_than_seq_len_plus_one_are_cut() {
        let b = batches(&[example(&[1, 2, 3, 4, 5], &[true; 5])], 4, false, 2, 0);
        assert_eq!((b[0].ids.clone(), b[0].targets.clone()), (vec![vec![1, 2]], vec![vec![2, 3]]));
    }

    #[test]
    fn packed_rows_cut_one_stream_into_seq_len_plus_one_and_keep_the_flags() {
        let examples = [
            example(&[1, 2, 3], &[false, true, true]),
            example(&[4, 5, 6, 7], &[false, false, true, true]),
            example(&[8, 9], &[false, true]),
        ];
        // Stream 1..=9 in rows of 4: [1 2 3 4] [5 6 7 8] [9] (dropped: one token predicts nothing).
        let b = batches(&examples, 8, true, 3, 0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].ids, [vec![1, 2, 3], vec![5, 6, 7]]);
        assert_eq!(b[0].targets, [vec![2, 3, 4], vec![6, 7, 8]]);
        // The flags of tokens 2 3 4 and 6 7 8: 4 starts the second example and 8 the third.
        assert_eq!(b[0].weights, [vec![1.0, 1.0, 0.0], vec![1.0, 1.0, 0.0]]);
        assert_eq!(b[0].pad, [vec![true; 3], vec![true; 3]]);
    }

    #[test]
    fn padding_a_batch_adds_weightless_hidden_tokens_after_each_row() {
        let examples = [example(&[1, 2, 3], &[false, true, true]), example(&[4, 5, 6, 7, 8], &[true; 5])];
        let b = batches(&examples, 2, false, 64, 0);
        let p = b[0].padded_to(6, 9);
        assert_eq!(p.ids, [vec![1, 2, 0, 0, 9, 9], vec![4, 5, 6, 7, 9, 9]]);
        assert_eq!(p.targets, [vec![2, 3, 0, 0, 9, 9], vec![5, 6, 7, 8, 9, 9]]);
        assert_eq!(p.weights, [vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0], vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]]);
        assert_eq!(p.pad, [vec![true, true, false, false, false, false], vec![true, true, true, true, false, false]]);
        // A length the batch already has changes nothing.
        assert_eq!(b[0].padded_to(4, 9).ids, b[0].ids);
    }

    #[test]
    fn gpu_lengths_round_up_to_the_step_but_not_past_the_context() {
        assert_eq!(gpu_length(1, 128), 16);
        assert_eq!(gpu_length(16, 128), 16);
        assert_eq!(gpu_length(17, 128), 32);
        assert_eq!(gpu_length(120, 128), 128);
        assert_eq!(gpu_length(99, 100), 100);
        assert_eq!(gpu_length(100, 100), 100);
        // A row already past the context (refused elsewhere) is not cut here.
        assert_eq!(gpu_length(130, 100), 130);
    }

    #[test]
    fn a_short_last_packed_row_is_padded() {
        let examples = [example(&[1, 2, 3, 4, 5, 6], &[true; 6])];
        let b = batches(&examples, 8, true, 3, 99);
        assert_eq!(b[0].ids, [vec![1, 2, 3], vec![5, 99, 99]]);
        assert_eq!(b[0].weights[1], [1.0, 0.0, 0.0]);
        assert_eq!(b[0].pad[1], [true, false, false]);
    }
}
