//! Merging whole models as mergekit 0.1.5 does (`mergekit-yaml`), from its YAML config:
//! `linear` (Wortsman et al. 2022, model soups), `task_arithmetic` (Ilharco et al. 2023),
//! `ties` (Yadav et al. 2023), `dare_ties` / `dare_linear` (Yu et al. 2023) and `slerp`.
//!
//! Per tensor, in mergekit's arithmetic:
//! - linear: Σ wᵢ·Xᵢ, divided by Σ wᵢ when `normalize` (default true).
//! - task vectors δᵢ = Xᵢ − B over the non-base models; sparsified (ties: keep the
//!   max(1, int(density·n)) largest |δ|; dare: keep each with probability `density`, then, with
//!   `rescale` (dare's default), scale the kept ones so their L1 norm equals the unpruned one's);
//!   weighted, Dᵢ = wᵢ·δᵢ. ties/dare_ties elect per parameter the sign of Σ Dᵢ (≥ 0 is +) and
//!   keep the Dᵢ that agree; the divisor is the sum of the agreeing wᵢ (0 → 1); task_arithmetic
//!   and dare_linear sum all Dᵢ with divisor Σ wᵢ (|·| < 1e-8 → 1). With `normalize` (ties's
//!   default; the others' is false) the sum is divided by the divisor; then times `lambda` (1),
//!   added to B.
//! - slerp between the base (t = 0) and the other model (t = 1), over each tensor flattened to
//!   one vector; linear interpolation when |cos θ| > 0.9995.
//!
//! Parameters are a number, a list (a gradient over the layers of a slice: t = j/(L−1)), or a
//! list of `{filter, value}` where the first filter that is a substring of the tensor name wins.
//! Per-model settings win over slice, then global ones (`t`, `normalize`, `lambda` are read from
//! slice and global only). Embeddings use t = 0 and the first slice; the final norm and the output
//! head t = 0 and the last slice. DARE draws from MT19937 seeded by `--seed` (mergekit's
//! `--random-seed`), tensor by tensor in name order, one 24-bit uniform per value, so a seeded
//! mergekit DARE merge is reproduced exactly. Arithmetic is in f64 here and rounded once to the
//! output dtype; mergekit computes in f32 (bf16 inputs: in bf16), so results agree to ~1e-7.

use std::collections::{BTreeMap, BTreeSet};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::merge::recipe::{MergeConfig, Method, Slice, Source, as_bool, as_f64, lookup};
use crate::{Error, Result};

/// MT19937 (Matsumoto & Nishimura 1998), seeded as torch's CPU generator seeds it
/// (`init_genrand`), for DARE masks identical to mergekit's.
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    pub fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32.wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    next ^= 0x9908_b0df;
                }
                self.state[i] = next;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// A checkpoint's tensors by name, as f64 with their shapes and stored dtypes.
pub struct Checkpoint {
    pub tensors: BTreeMap<String, (Vec<f64>, Vec<usize>, Dtype)>,
    pub config: Value,
}

impl Checkpoint {
    /// The tensors of safetensors files (shards in any order), for merging.
    pub fn from_files(config: &str, weights: &[(String, Vec<u8>)], label: &str) -> Result<Checkpoint> {
        let config: Value = serde_json::from_str(config).map_err(|e| Error::input(format!("{label}/config.json: {e}")))?;
        if config.get("quantization_config").is_some() {
            return Err(Error::input(format!("{label} is quantized: merge the f32/f16/bf16 models it came from")));
        }
        let mut tensors = BTreeMap::new();
        for (name, bytes) in weights {
            let st = SafeTensors::deserialize(bytes).map_err(|e| Error::input(format!("{label}/{name} is damaged ({e})")))?;
            for (key, view) in st.tensors() {
                let d = view.data();
                let values: Vec<f64> = match view.dtype() {
                    Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect(),
                    Dtype::F16 => d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64()).collect(),
                    Dtype::BF16 => d.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64()).collect(),
                    other => return Err(Error::input(format!("{label}: tensor {key} is {other:?}; merging reads f32, f16 and bf16"))),
                };
                tensors.insert(key, (values, view.shape().to_vec(), view.dtype()));
            }
        }
        Ok(Checkpoint { tensors, config })
    }
}

/// Which block a tensor belongs to: `Some(i)` for layer i, `None` for embeddings (`pre`) and the
/// final norm and head (`post`).
fn layer_of(name: &str) -> Option<(usize, String, String)> {
    for prefix in ["model.layers.", "transformer.h."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let (num, tail) = rest.split_once('.')?;
            return Some((num.parse().ok()?, prefix.to_string(), tail.to_string()));
        }
    }
    None
}

fn is_pre(name: &str) -> bool {
    ["embed_tokens", "wte", "wpe"].iter().any(|p| name.contains(p))
}

/// Merge the models of `cfg` (already read, by the path the config names them with). Returns
/// the output tensors by name, with their shapes, in the output dtype.
pub fn merge(cfg: &MergeConfig, models: &BTreeMap<String, Checkpoint>, seed: u64) -> Result<BTreeMap<String, (Vec<f64>, Vec<usize>)>> {
    let get = |m: &str| models.get(m).ok_or_else(|| Error::input(format!("the model {m} was not read")));
    let first = &cfg.slices[0];
    let last = cfg.slices.last().expect("at least one slice");
    let donor = get(cfg.base_model.as_deref().unwrap_or(&first.sources[0].model))?;
    // The jobs: output name → (slice, t, input name). Pre-layer tensors from the first slice,
    // post-layer ones from the last, both at t = 0; layers slice by slice.
    let mut jobs: Vec<(String, &Slice, f64, String)> = Vec::new();
    let mut out_layer = 0;
    let names: BTreeSet<&String> = donor.tensors.keys().collect();
    for name in &names {
        if layer_of(name).is_none() {
            let slice = if is_pre(name) { first } else { last };
            jobs.push(((*name).clone(), slice, 0.0, (*name).clone()));
        }
    }
    for slice in &cfg.slices {
        let count = match (cfg.sliced, slice.sources[0].layers) {
            (true, Some((a, b))) => b - a,
            _ => names.iter().filter_map(|n| layer_of(n).map(|l| l.0 + 1)).max().unwrap_or(0),
        };
        let start = slice.sources[0].layers.map_or(0, |(a, _)| a);
        for j in 0..count {
            let t = if count == 1 { 1.0 } else { j as f64 / (count - 1) as f64 };
            for name in &names {
                let Some((i, prefix, tail)) = layer_of(name) else { continue };
                if i != start + j {
                    continue;
                }
                jobs.push((format!("{prefix}{}.{tail}", out_layer + j), slice, t, (*name).clone()));
            }
        }
        out_layer += count;
    }
    // mergekit runs tensors in ascending name order, which fixes DARE's random stream.
    jobs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rng = Mt19937::new(seed as u32);
    let mut out = BTreeMap::new();
    for (out_name, slice, t, in_name) in jobs {
        // The input name for each source: its own layer number in a slice.
        let input_name = |src: &Source| -> String {
            match (layer_of(&in_name), src.layers) {
                (Some((i, prefix, tail)), Some((a, _))) => format!("{prefix}{}.{tail}", a + i - slice.sources[0].layers.map_or(0, |(s, _)| s)),
                _ => in_name.clone(),
            }
        };
        let base_path = slice.base_model.as_deref();
        // Inputs present for this tensor, base first when the method uses one.
        let mut inputs: Vec<(&Source, &(Vec<f64>, Vec<usize>, Dtype))> = Vec::new();
        for src in &slice.sources {
            let ck = get(&src.model)?;
            let key = input_name(src);
            match ck.tensors.get(&key) {
                Some(x) => inputs.push((src, x)),
                None if key == "lm_head.weight" => {
                    if let Some(x) = ck.tensors.get("model.embed_tokens.weight") {
                        inputs.push((src, x));
                    }
                }
                None => return Err(Error::input(format!("tensor {key} required but not present in model {}", src.model))),
            }
        }
        let shape = inputs[0].1.1.clone();
        if let Some((s, _)) = inputs.iter().find(|(_, x)| x.1 != shape) {
            return Err(Error::input(format!(
                "tensor {out_name} is {:?} in {} but {shape:?} in {}: the models differ in shape (a different vocabulary?)",
                inputs.iter().find(|(x, _)| x.model == s.model).map(|(_, x)| &x.1).unwrap(),
                s.model,
                inputs[0].0.model
            )));
        }
        let global = &cfg.parameters;
        let per = |name: &str, src: &Source| lookup(name, &input_name(src), t, Some(src), slice, global);
        let shared = |name: &str| lookup(name, &out_name, t, None, slice, global);
        let merged = match cfg.method {
            Method::Linear => {
                let normalize = as_bool(shared("normalize"), "normalize")?.unwrap_or(true);
                let mut acc = vec![0.0; inputs[0].1.0.len()];
                let mut total = 0.0;
                for (src, x) in &inputs {
                    let w = as_f64(per("weight", src), "weight")?
                        .ok_or_else(|| Error::input(format!("missing required parameter weight for {}.{out_name}", src.model)))?;
                    total += w;
                    for (a, v) in acc.iter_mut().zip(&x.0) {
                        *a += w * v;
                    }
                }
                if normalize {
                    acc.iter_mut().for_each(|a| *a /= total);
                }
                acc
            }
            Method::Slerp => {
                let base = base_path.ok_or_else(|| Error::input("slerp needs base_model"))?;
                if inputs.len() != 2 {
                    return Err(Error::input(format!("slerp merges exactly two models (the base and one more), not {}", inputs.len())));
                }
                let (v0, v1) = if inputs[0].0.model == base { (&inputs[0].1.0, &inputs[1].1.0) } else { (&inputs[1].1.0, &inputs[0].1.0) };
                let t = as_f64(shared("t"), "t")?.ok_or_else(|| Error::input(format!("slerp needs t for {out_name}")))?;
                slerp(t, v0, v1)
            }
            m => {
                let base = base_path.ok_or_else(|| Error::input(format!("{m:?} needs base_model")))?;
                let b = &inputs.iter().find(|(s, _)| s.model == base).ok_or_else(|| Error::input(format!("{out_name}: the base model {base} is not among the inputs")))?.1.0;
                let normalize = as_bool(shared("normalize"), "normalize")?.unwrap_or(m.default_normalize());
                let lambda = as_f64(shared("lambda"), "lambda")?.unwrap_or(1.0);
                let consensus = matches!(m, Method::Ties | Method::DareTies);
                let mut deltas = Vec::new();
                let mut weights = Vec::new();
                for (src, x) in inputs.iter().filter(|(s, _)| s.model != base) {
                    let w = as_f64(per("weight", src), "weight")?
                        .ok_or_else(|| Error::input(format!("missing required parameter weight for {}.{out_name}", src.model)))?;
                    let density = as_f64(per("density", src), "density")?.unwrap_or(1.0);
                    let rescale = as_bool(per("rescale", src).or_else(|| shared("rescale")), "rescale")?.unwrap_or(m.default_rescale());
                    let delta: Vec<f64> = x.0.iter().zip(b).map(|(a, c)| a - c).collect();
                    let sparse = match m {
                        Method::Ties => magnitude_sparsify(&delta, density, rescale),
                        Method::DareTies | Method::DareLinear => bernoulli_sparsify(&delta, density, rescale, &mut rng),
                        _ => delta,
                    };
                    deltas.push(sparse.into_iter().map(|d| d * w).collect::<Vec<f64>>());
                    weights.push(w);
                }
                let n = b.len();
                let mut out = b.clone();
                for i in 0..n {
                    let (mut mixed, mut divisor) = (0.0, 0.0);
                    if consensus {
                        let total: f64 = deltas.iter().map(|d| d[i]).sum();
                        let majority = if total >= 0.0 { 1.0 } else { -1.0 };
                        for (d, w) in deltas.iter().zip(&weights) {
                            if super::ops::sign(d[i]) == majority {
                                mixed += d[i];
                                divisor += w;
                            }
                        }
                        if divisor == 0.0 {
                            divisor = 1.0;
                        }
                    } else {
                        for (d, w) in deltas.iter().zip(&weights) {
                            mixed += d[i];
                            divisor += w;
                        }
                        if divisor.abs() < 1e-8 {
                            divisor = 1.0;
                        }
                    }
                    if normalize {
                        mixed /= divisor;
                    }
                    out[i] += mixed * lambda;
                }
                out
            }
        };
        if merged.iter().any(|v| !v.is_finite()) {
            return Err(Error::input(format!("the merge of {out_name} has NaN or infinite values (weights summing to 0 with normalize?)")));
        }
        out.insert(out_name, (merged, shape));
    }
    Ok(out)
}

/// mergekit's magnitude sparsification: keep the max(1, int(density·n)) largest |δ| (ties to the
/// earlier index), optionally L1-rescaled.
fn magnitude_sparsify(delta: &[f64], density: f64, rescale: bool) -> Vec<f64> {
    if density >= 1.0 {
        return delta.to_vec();
    }
    if density <= 0.0 || delta.is_empty() {
        return vec![0.0; delta.len()];
    }
    let k = ((density * delta.len() as f64) as usize).max(1);
    // Ranked by the f32 magnitudes mergekit sorts.
    let mag: Vec<f32> = delta.iter().map(|d| d.abs() as f32).collect();
    let mut order: Vec<usize> = (0..delta.len()).collect();
    order.sort_by(|&a, &b| mag[b].total_cmp(&mag[a]).then(a.cmp(&b)));
    let mut out = vec![0.0; delta.len()];
    for &i in &order[..k] {
        out[i] = delta[i];
    }
    if rescale { l1_rescale(delta, out) } else { out }
}

/// DARE's Bernoulli mask from the MT19937 stream: keep when a 24-bit uniform is below density.
fn bernoulli_sparsify(delta: &[f64], density: f64, rescale: bool, rng: &mut Mt19937) -> Vec<f64> {
    if density >= 1.0 {
        return delta.to_vec();
    }
    let p = density as f32;
    let out: Vec<f64> = delta
        .iter()
        .map(|&d| {
            let u = (rng.next_u32() & 0xFF_FFFF) as f32 * (1.0 / 16_777_216.0);
            if u < p { d } else { 0.0 }
        })
        .collect();
    if rescale { l1_rescale(delta, out) } else { out }
}

/// Scale `masked` so its L1 norm is the original's (none when either is below 1e-7).
fn l1_rescale(original: &[f64], masked: Vec<f64>) -> Vec<f64> {
    let b: f64 = original.iter().map(|x| x.abs()).sum();
    let a: f64 = masked.iter().map(|x| x.abs()).sum();
    if b < 1e-7 || a < 1e-7 {
        return masked;
    }
    masked.into_iter().map(|x| x * (b / a)).collect()
}

/// Spherical interpolation of two flattened tensors (t = 0: `v0`).
pub fn slerp(t: f64, v0: &[f64], v1: &[f64]) -> Vec<f64> {
    let norm = |v: &[f64]| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-8 { n } else { 1.0 }
    };
    let (na, nb) = (norm(v0), norm(v1));
    let dot = (v0.iter().zip(v1).map(|(a, b)| (a / na) * (b / nb)).sum::<f64>()).clamp(-1.0, 1.0);
    let (ca, cb) = if dot.abs() > 0.9995 {
        (1.0 - t, t)
    } else {
        let theta = dot.acos();
        let s = theta.sin();
        (((1.0 - t) * theta).sin() / s, (t * theta).sin() / s)
    };
    v0.iter().zip(v1).map(|(a, b)| ca * a + cb * b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The first outputs of init_genrand(5489), from the reference implementation.
        let mut r = Mt19937::new(5489);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [3_499_211_612, 581_869_302, 3_890_346_734]);
    }

    #[test]
    fn slerp_ends_at_its_endpoints_and_keeps_the_norm_of_orthogonal_unit_vectors() {
        let (a, b) = (vec![1.0, 0.0], vec![0.0, 1.0]);
        assert_eq!(slerp(0.0, &a, &b), a);
        let mid = slerp(0.5, &a, &b);
        assert!((mid[0] - 0.5f64.sqrt()).abs() < 1e-12 && (mid[1] - 0.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_config_without_a_weight_names_the_model_and_tensor() {
        let cfg = MergeConfig::from_yaml("merge_method: linear\nmodels:\n  - model: a\n").unwrap();
        let ck = Checkpoint { tensors: BTreeMap::from([("w".into(), (vec![1.0], vec![1], Dtype::F32))]), config: Value::Null };
        let err = merge(&cfg, &BTreeMap::from([("a".into(), ck)]), 0).unwrap_err().to_string();
        assert!(err.contains("weight for a.w"), "{err}");
        let err = MergeConfig::from_yaml("merge_method: della\nmodels: []\n").unwrap_err().to_string();
        assert!(err.contains("ties"), "{err}");
    }
}
