//! The building blocks of task-vector merging, on host vectors: magnitude pruning (keep the
//! top-k by |x|), random pruning with rescale (DARE, Yu et al. 2023, "Language Models are Super
//! Mario"), sign election and the disjoint mean (TIES, Yadav et al. 2023, "TIES-Merging"), and
//! the weighted sum (task arithmetic, Ilharco et al. 2023). PEFT (`peft/utils/merge_utils.py`)
//! and mergekit compose them differently; `combine.rs` and `models.rs` say how.

use crate::rng::Rng;
use crate::{Error, Result};

/// How TIES elects the sign of each parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MajoritySign {
    /// The sign of the sum of the values.
    Total,
    /// The sign that more tensors have.
    Frequency,
}

impl std::str::FromStr for MajoritySign {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "total" => Ok(MajoritySign::Total),
            "frequency" => Ok(MajoritySign::Frequency),
            _ => Err(Error::input(format!("majority sign method '{s}': use total or frequency"))),
        }
    }
}

pub fn check_density(density: f64) -> Result<()> {
    if !(density >= 0.0) {
        return Err(Error::input(format!("density must be in [0, 1] (the fraction of values kept), not {density}")));
    }
    Ok(())
}

/// Keep the `int(density · n)` largest values by magnitude, zero the rest. Equal magnitudes go
/// to the earlier index. A density of 1 or more keeps everything.
pub fn magnitude_prune(t: &[f64], density: f64) -> Vec<f64> {
    if density >= 1.0 {
        return t.to_vec();
    }
    let k = (density * t.len() as f64) as usize;
    let mut order: Vec<usize> = (0..t.len()).collect();
    order.sort_by(|&a, &b| t[b].abs().total_cmp(&t[a].abs()).then(a.cmp(&b)));
    let mut out = vec![0.0; t.len()];
    for &i in &order[..k] {
        out[i] = t[i];
    }
    out
}

/// Keep each value with probability `density` (a seeded Bernoulli draw) and, with `rescale`,
/// divide the kept ones by `density`, so the expected value is unchanged. Returns the pruned
/// tensor and the kept mask. A density of 1 or more keeps everything.
pub fn random_prune(t: &[f64], density: f64, rescale: bool, rng: &mut Rng) -> (Vec<f64>, Vec<bool>) {
    if density >= 1.0 {
        return (t.to_vec(), vec![true; t.len()]);
    }
    let mask: Vec<bool> = t.iter().map(|_| rng.next_f64() < density).collect();
    let out = t
        .iter()
        .zip(&mask)
        .map(|(&x, &keep)| if !keep { 0.0 } else if rescale { x / density } else { x })
        .collect();
    (out, mask)
}

/// The elected sign (+1 or −1, ties to +1) of each parameter over the tensors.
pub fn elect_sign(tensors: &[Vec<f64>], method: MajoritySign) -> Vec<f64> {
    let n = tensors.first().map_or(0, |t| t.len());
    (0..n)
        .map(|i| {
            let s: f64 = match method {
                MajoritySign::Total => tensors.iter().map(|t| t[i]).sum(),
                MajoritySign::Frequency => tensors.iter().map(|t| sign(t[i])).sum(),
            };
            if s >= 0.0 { 1.0 } else { -1.0 }
        })
        .collect()
}

/// −1, 0 or 1, as `torch.sign`.
pub fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The disjoint mean: per parameter, the mean of the `weighted` values whose tensor (in
/// `signs_of`) agrees with the elected sign; zero where none does.
pub fn disjoint_mean(weighted: &[Vec<f64>], signs_of: &[Vec<f64>], elected: &[f64]) -> Vec<f64> {
    (0..elected.len())
        .map(|i| {
            let (mut sum, mut count) = (0.0, 0.0);
            for (w, s) in weighted.iter().zip(signs_of) {
                if sign(s[i]) == elected[i] {
                    sum += w[i];
                    count += 1.0;
                }
            }
            sum / f64::max(count, 1.0)
        })
        .collect()
}

/// Σ wᵢ·tᵢ.
pub fn weighted_sum(tensors: &[Vec<f64>], weights: &[f64]) -> Vec<f64> {
    let n = tensors.first().map_or(0, |t| t.len());
    let mut out = vec![0.0; n];
    for (t, &w) in tensors.iter().zip(weights) {
        for (o, &x) in out.iter_mut().zip(t) {
            *o += w * x;
        }
    }
    out
}

/// Scale every tensor by its weight.
pub fn weighted(tensors: &[Vec<f64>], weights: &[f64]) -> Vec<Vec<f64>> {
    tensors.iter().zip(weights).map(|(t, &w)| t.iter().map(|x| w * x).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_pruning_keeps_the_int_of_density_times_n_largest() {
        // density 0.5 of 5 values keeps int(2.5) = 2: the −4 and the 3.
        assert_eq!(magnitude_prune(&[1.0, -4.0, 3.0, 0.5, 2.0], 0.5), vec![0.0, -4.0, 3.0, 0.0, 0.0]);
        assert_eq!(magnitude_prune(&[1.0, 2.0], 1.0), vec![1.0, 2.0]);
        assert_eq!(magnitude_prune(&[1.0, 2.0], 0.0), vec![0.0, 0.0]);
    }

    #[test]
    fn ties_elects_by_total_or_by_count() {
        // Parameter 0: +3, −1, −1: the total says +, the count says −.
        let t = vec![vec![3.0], vec![-1.0], vec![-1.0]];
        assert_eq!(elect_sign(&t, MajoritySign::Total), vec![1.0]);
        assert_eq!(elect_sign(&t, MajoritySign::Frequency), vec![-1.0]);
        // The disjoint mean over the agreeing tensors: (−1 + −1) / 2.
        assert_eq!(disjoint_mean(&t, &t, &[-1.0]), vec![-1.0]);
        // Zero agrees with no sign; nothing agrees → 0.
        assert_eq!(disjoint_mean(&[vec![0.0]], &[vec![0.0]], &[1.0]), vec![0.0]);
    }
}
