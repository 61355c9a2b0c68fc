//! Combining LoRA adapters into one, as PEFT 0.21's `LoraModel.add_weighted_adapter` does
//! (`peft/tuners/lora/model.py`, `peft/utils/merge_utils.py`), module by module, in PEFT's
//! orientation (A `[r, in]`, B `[out, r]`, sᵢ the scaling of adapter i):
//!
//! - `cat`: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …]; rank Σrᵢ. ΔW is exactly Σ wᵢ sᵢ Bᵢ Aᵢ.
//! - `linear`, `ties`, `dare_linear`, `dare_ties`, `magnitude_prune`: the method runs on the A
//!   factors and on the B factors separately, with weight √|wᵢsᵢ| on each side and the sign of
//!   wᵢsᵢ on A. All ranks must be equal. Not ΔW = Σ wᵢ ΔWᵢ: the product has cross terms.
//! - `svd`, `ties_svd`, `dare_linear_svd`, `dare_ties_svd`, `magnitude_prune_svd`: the method runs
//!   on the full ΔWᵢ = sᵢ Bᵢ Aᵢ, and a truncated SVD (rank `svd_rank`, default the largest rᵢ)
//!   gives B = U_r·S_r, A = V_rᵀ, optionally clamped at the `svd_clamp` quantile of their entries.
//!
//! TIES prunes each tensor to its top `density` by magnitude, elects a sign per parameter from the
//! pruned, unweighted tensors (`total`: sign of the sum, `frequency`: sign of the count), and takes
//! the mean of the weighted values that agree. DARE keeps each value with probability `density`
//! (seeded here; PEFT draws from torch's global generator) and divides by it.
//!
//! The new adapter gets r = its rank and `lora_alpha = r`, every other setting from the first
//! adapter. Its scaling is therefore α/r = 1, unless that adapter used rsLoRA: then PEFT's merged
//! adapter is scaled by α/√r = √r, which multiplies ΔW by √r. `Scaling::Peft` (the default)
//! reproduces that; `Scaling::Exact` writes a plain LoRA config whose scaling is 1.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::ops::{self, MajoritySign};
use crate::lora::peft::{PeftAdapter, PeftConfig};
use crate::rng::Rng;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combination {
    Linear,
    Cat,
    Svd,
    Ties,
    TiesSvd,
    DareLinear,
    DareTies,
    DareLinearSvd,
    DareTiesSvd,
    MagnitudePrune,
    MagnitudePruneSvd,
}

pub const COMBINATIONS: &str =
    "linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd, magnitude_prune, magnitude_prune_svd";

impl std::str::FromStr for Combination {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| Error::input(format!("unknown combination '{s}': use one of {COMBINATIONS}")))
    }
}

impl Combination {
    pub fn is_svd(self) -> bool {
        matches!(self, Combination::Svd | Combination::TiesSvd | Combination::DareLinearSvd | Combination::DareTiesSvd | Combination::MagnitudePruneSvd)
    }
    /// The task-vector method applied (to the factors, or to ΔW for the SVD types).
    fn method(self) -> Method {
        match self {
            Combination::Linear | Combination::Svd | Combination::Cat => Method::Sum,
            Combination::Ties | Combination::TiesSvd => Method::Ties,
            Combination::DareLinear | Combination::DareLinearSvd => Method::DareLinear,
            Combination::DareTies | Combination::DareTiesSvd => Method::DareTies,
            Combination::MagnitudePrune | Combination::MagnitudePruneSvd => Method::MagnitudePrune,
        }
    }
    fn needs_density(self) -> bool {
        !matches!(self.method(), Method::Sum)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Sum,
    Ties,
    DareLinear,
    DareTies,
    MagnitudePrune,
}

/// How the merged adapter's config scales it (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// As PEFT writes it: α = r and rsLoRA copied from the first adapter.
    #[default]
    Peft,
    /// α = r without rsLoRA, so the merged ΔW is the combination itself.
    Exact,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CombineOptions {
    pub combination: Combination,
    /// One per adapter; negative weights subtract.
    pub weights: Vec<f64>,
    #[serde(default)]
    pub density: Option<f64>,
    #[serde(default = "total")]
    pub majority_sign: MajoritySign,
    #[serde(default)]
    pub svd_rank: Option<usize>,
    #[serde(default)]
    pub svd_clamp: Option<f64>,
    /// DARE's random draws.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub scaling: Scaling,
}

fn total() -> MajoritySign {
    MajoritySign::Total
}

impl CombineOptions {
    pub fn new(combination: Combination, weights: Vec<f64>) -> CombineOptions {
        CombineOptions {
            combination,
            weights,
            density: None,
            majority_sign: MajoritySign::Total,
            svd_rank: None,
            svd_clamp: None,
            seed: 0,
            scaling: Scaling::Peft,
        }
    }
}

/// What a method did to one tensor of one module, for the page's merge lab: the tensor the
/// method ran on (`A`, `B` or `ΔW`), per parameter the elected sign and how many adapters
/// disagreed with it (TIES), how many adapters kept it (pruning), and for the SVD types the
/// singular values with the cut.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    pub space: &'static str,
    pub rows: usize,
    pub cols: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elected: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singular_values: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<usize>,
}

/// The scaling PEFT applies to an adapter: α/r, or α/√r with rsLoRA.
pub fn scaling(c: &PeftConfig) -> f64 {
    if c.use_rslora { c.lora_alpha / (c.r as f64).sqrt() } else { c.lora_alpha / c.r as f64 }
}

/// Combine `adapters` (all for the same base) into one PEFT adapter. With `trace` set to a module
/// path, also returns what the method did there.
pub fn combine(adapters: &[&PeftAdapter], opts: &CombineOptions, trace: Option<&str>) -> Result<(PeftAdapter, Option<Trace>)> {
    if adapters.is_empty() {
        return Err(Error::input("give at least one adapter to combine"));
    }
    if opts.weights.len() != adapters.len() {
        return Err(Error::input(format!("{} adapters but {} weights: give one weight per adapter", adapters.len(), opts.weights.len())));
    }
    if let Some(w) = opts.weights.iter().find(|w| !w.is_finite()) {
        return Err(Error::input(format!("weight {w} is not a finite number")));
    }
    // PEFT: a single adapter can only be merged linearly.
    let combination = if adapters.len() == 1 { Combination::Linear } else { opts.combination };
    let density = if combination.needs_density() {
        let d = opts.density.ok_or_else(|| {
            Error::input(format!("{combination:?} prunes: give --density (the fraction of values kept, e.g. 0.5)"))
        })?;
        ops::check_density(d)?;
        d
    } else {
        1.0
    };
    for a in adapters {
        if a.config.fan_in_fan_out != adapters[0].config.fan_in_fan_out {
            return Err(Error::input("the adapters are for different architectures (fan_in_fan_out differs)"));
        }
    }
    let ranks: Vec<usize> = adapters.iter().map(|a| a.config.r).collect();
    let new_rank = match combination {
        Combination::Cat => ranks.iter().sum(),
        c if c.is_svd() => opts.svd_rank.unwrap_or(*ranks.iter().max().expect("non-empty")),
        _ => {
            if ranks.iter().any(|&r| r != ranks[0]) {
                return Err(Error::input(format!(
                    "{combination:?} needs adapters of one rank, but they have r = {ranks:?}: use cat, or an SVD type (svd, ties_svd, …) with --svd-rank"
                )));
            }
            ranks[0]
        }
    };
    if new_rank == 0 {
        return Err(Error::input("the merged adapter would have rank 0"));
    }
    let scales: Vec<f64> = adapters.iter().map(|a| scaling(&a.config)).collect();
    let paths: BTreeSet<&String> = adapters.iter().flat_map(|a| a.modules.keys()).collect();
    let mut rng = Rng::new(opts.seed);
    let mut modules = BTreeMap::new();
    let mut traced = None;
    for path in paths {
        // The adapters that have this module, with their weights (PEFT skips the others).
        let present: Vec<(usize, &PeftAdapter)> = adapters.iter().enumerate().filter(|(_, a)| a.modules.contains_key(path)).map(|(i, a)| (i, *a)).collect();
        let ((_, a_shape), (_, b_shape)) = &present[0].1.modules[path];
        let (d_in, d_out) = (a_shape[1], b_shape[0]);
        for (_, a) in &present {
            let ((_, sa), (_, sb)) = &a.modules[path];
            if sa[1] != d_in || sb[0] != d_out {
                return Err(Error::input(format!(
                    "{path}: the adapters disagree on its shape ([{}, {}] vs [{d_out}, {d_in}]): they are for different bases",
                    sb[0], sa[1]
                )));
            }
        }
        let want_trace = trace == Some(path.as_str());
        let (a, b, t) = match combination {
            Combination::Cat => {
                let mut a = vec![0.0f64; new_rank * d_in];
                let mut b = vec![0.0f64; d_out * new_rank];
                let mut row = 0;
                for (i, ad) in &present {
                    let ((av, _), (bv, _)) = &ad.modules[path];
                    let r = ad.config.r;
                    let k = opts.weights[*i] * scales[*i];
                    for j in 0..r * d_in {
                        a[row * d_in + j] = av[j] as f64 * k;
                    }
                    for o in 0..d_out {
                        for j in 0..r {
                            b[o * new_rank + row + j] = bv[o * r + j] as f64;
                        }
                    }
                    row += r;
                }
                (a, b, None)
            }
            c if c.is_svd() => {
                let deltas: Vec<Vec<f64>> = present
                    .iter()
                    .map(|(i, ad)| {
                        let ((av, _), (bv, _)) = &ad.modules[path];
                        delta(av, bv, ad.config.r, d_in, d_out, scales[*i])
                    })
                    .collect();
                let w: Vec<f64> = present.iter().map(|(i, _)| opts.weights[*i]).collect();
                let (merged, mut t) = apply(c.method(), &deltas, &w, density, opts.majority_sign, &mut rng, want_trace);
                let (b, a, s) = truncated_svd(&merged, d_out, d_in, new_rank, opts.svd_clamp)?;
                if let Some(t) = t.as_mut() {
                    t.space = "ΔW";
                    t.rows = d_out;
                    t.cols = d_in;
                    t.singular_values = Some(s);
                    t.cut = Some(new_rank);
                }
                (a, b, t)
            }
            c => {
                let mut wa = Vec::new();
                let mut wb = Vec::new();
                let mut fa = Vec::new();
                let mut fb = Vec::new();
                for (i, ad) in &present {
                    let ((av, _), (bv, _)) = &ad.modules[path];
                    let ws = opts.weights[*i] * scales[*i];
                    let root = ws.abs().sqrt();
                    wa.push(if ws >= 0.0 { root } else { -root });
                    wb.push(root);
                    fa.push(av.iter().map(|&x| x as f64).collect::<Vec<f64>>());
                    fb.push(bv.iter().map(|&x| x as f64).collect::<Vec<f64>>());
                }
                let (a, mut ta) = apply(c.method(), &fa, &wa, density, opts.majority_sign, &mut rng, want_trace);
                let (b, _) = apply(c.method(), &fb, &wb, density, opts.majority_sign, &mut rng, false);
                if let Some(t) = ta.as_mut() {
                    t.space = "A";
                    t.rows = new_rank;
                    t.cols = d_in;
                }
                (a, b, ta)
            }
        };
        if want_trace {
            traced = t;
        }
        if a.iter().chain(&b).any(|v| !v.is_finite()) {
            return Err(Error::input(format!("{path}: the merge gave non-finite values; check the weights")));
        }
        let a: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        modules.insert(path.clone(), ((a, [new_rank, d_in]), (b, [d_out, new_rank])));
    }
    if let Some(p) = trace {
        if traced.is_none() {
            return Err(Error::input(format!("no adapter has the module {p}")));
        }
    }
    let mut config = adapters[0].config.clone();
    config.r = new_rank;
    config.lora_alpha = new_rank as f64;
    if opts.scaling == Scaling::Exact {
        config.use_rslora = false;
    }
    config.lora_dropout = adapters[0].config.lora_dropout;
    let mut targets: BTreeSet<String> = BTreeSet::new();
    for a in adapters {
        match &a.config.target_modules {
            serde_json::Value::Array(v) => targets.extend(v.iter().filter_map(|x| x.as_str().map(String::from))),
            serde_json::Value::String(s) => {
                targets.insert(s.clone());
            }
            _ => {}
        }
    }
    config.target_modules = serde_json::json!(targets.into_iter().collect::<Vec<_>>());
    Ok((PeftAdapter { config, modules }, traced))
}

/// ΔW = s·B·A, `[out, in]`, in f64.
pub fn delta(a: &[f32], b: &[f32], r: usize, d_in: usize, d_out: usize, s: f64) -> Vec<f64> {
    let mut d = vec![0.0; d_out * d_in];
    for o in 0..d_out {
        for k in 0..r {
            let bk = b[o * r + k] as f64 * s;
            if bk == 0.0 {
                continue;
            }
            let row = &a[k * d_in..(k + 1) * d_in];
            for (x, &av) in d[o * d_in..(o + 1) * d_in].iter_mut().zip(row) {
                *x += bk * av as f64;
            }
        }
    }
    d
}

/// One task-vector method over `tensors` with `weights` (PEFT's merge_utils), and, when asked,
/// what it did per parameter.
fn apply(
    method: Method,
    tensors: &[Vec<f64>],
    weights: &[f64],
    density: f64,
    majority: MajoritySign,
    rng: &mut Rng,
    trace: bool,
) -> (Vec<f64>, Option<Trace>) {
    let n = tensors[0].len();
    let mut t = trace.then(|| Trace { space: "", rows: 0, cols: 0, elected: None, conflicts: None, kept: None, singular_values: None, cut: None });
    let count_kept = |pruned: &[Vec<f64>], originals: &[Vec<f64>]| -> Vec<f32> {
        (0..n).map(|i| pruned.iter().zip(originals).filter(|(p, o)| p[i] != 0.0 || o[i] == 0.0).count() as f32).collect()
    };
    let out = match method {
        Method::Sum => ops::weighted_sum(tensors, weights),
        Method::MagnitudePrune | Method::Ties => {
            let pruned: Vec<Vec<f64>> = tensors.iter().map(|x| ops::magnitude_prune(x, density)).collect();
            if let Some(t) = t.as_mut() {
                t.kept = Some(count_kept(&pruned, tensors));
            }
            if method == Method::MagnitudePrune {
                ops::weighted_sum(&pruned, weights)
            } else {
                ties_merge(&pruned, weights, majority, t.as_mut())
            }
        }
        Method::DareLinear | Method::DareTies => {
            let mut pruned = Vec::new();
            let mut kept = vec![0f32; n];
            for x in tensors {
                let (p, mask) = ops::random_prune(x, density, true, rng);
                for (k, m) in kept.iter_mut().zip(&mask) {
                    *k += *m as u8 as f32;
                }
                pruned.push(p);
            }
            if let Some(t) = t.as_mut() {
                t.kept = Some(kept);
            }
            if method == Method::DareLinear {
                ops::weighted_sum(&pruned, weights)
            } else {
                ties_merge(&pruned, weights, majority, t.as_mut())
            }
        }
    };
    (out, t)
}

/// Elect signs on the unweighted tensors, then the disjoint mean of the weighted ones (PEFT's
/// `ties` after its pruning step).
fn ties_merge(pruned: &[Vec<f64>], weights: &[f64], majority: MajoritySign, trace: Option<&mut Trace>) -> Vec<f64> {
    let elected = ops::elect_sign(pruned, majority);
    if let Some(t) = trace {
        t.conflicts = Some(
            (0..elected.len())
                .map(|i| pruned.iter().filter(|p| p[i] != 0.0 && ops::sign(p[i]) != elected[i]).count() as f32)
                .collect(),
        );
        t.elected = Some(elected.iter().map(|&s| s as f32).collect());
    }
    ops::disjoint_mean(&ops::weighted(pruned, weights), pruned, &elected)
}

/// The rank-`k` truncation of `m` (`[rows, cols]`) by SVD: B = U_k·S_k `[rows, k]`, A = V_kᵀ
/// `[k, cols]`, clamped to ±(the `clamp` quantile of their entries) when asked; and all singular
/// values. Computed in f64 by burn's host SVD (Golub–Kahan bidiagonalization).
pub fn truncated_svd(m: &[f64], rows: usize, cols: usize, k: usize, clamp: Option<f64>) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (u, s, vt) = crate::linalg::svd(m, rows, cols)?;
    let p = rows.min(cols);
    let k_eff = k.min(p);
    // U [rows, p], S [p], Vt [p, cols].
    let mut b = vec![0.0; rows * k];
    let mut a = vec![0.0; k * cols];
    for i in 0..rows {
        for j in 0..k_eff {
            b[i * k + j] = u[i * p + j] * s[j];
        }
    }
    for j in 0..k_eff {
        a[j * cols..(j + 1) * cols].copy_from_slice(&vt[j * cols..(j + 1) * cols]);
    }
    if let Some(q) = clamp {
        if !(0.0..=1.0).contains(&q) {
            return Err(Error::input(format!("svd clamp {q} is a quantile: give a value in [0, 1]")));
        }
        let mut dist: Vec<f64> = b.iter().chain(&a).copied().collect();
        let hi = quantile(&mut dist, q);
        for x in b.iter_mut().chain(a.iter_mut()) {
            *x = x.clamp(-hi, hi);
        }
    }
    Ok((b, a, s))
}

/// `torch.quantile` with linear interpolation.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

impl PeftAdapter {
    /// This adapter as PEFT files (config text, safetensors bytes), without a model.
    pub fn to_files(&self) -> Result<(String, Vec<u8>)> {
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for (path, ((a, sa), (b, sb))) in &self.modules {
            tensors.push((format!("base_model.model.{path}.lora_A.weight"), crate::model::load::f32_bytes(a), sa.to_vec()));
            tensors.push((format!("base_model.model.{path}.lora_B.weight"), crate::model::load::f32_bytes(b), sb.to_vec()));
        }
        let weights = crate::model::load::serialize_tensors(&tensors, safetensors::Dtype::F32, crate::lora::peft::WEIGHTS_FILE)?;
        let c = &self.config;
        let config = serde_json::json!({
            "alpha_pattern": {},
            "base_model_name_or_path": c.base_model_name_or_path,
            "bias": c.bias.clone().unwrap_or_else(|| "none".into()),
            "fan_in_fan_out": c.fan_in_fan_out,
            "inference_mode": true,
            "init_lora_weights": true,
            "lora_alpha": c.lora_alpha,
            "lora_dropout": c.lora_dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": c.r,
            "rank_pattern": {},
            "target_modules": c.target_modules,
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": c.use_rslora,
        });
        Ok((serde_json::to_string_pretty(&config).expect("config serialises"), weights))
    }

    /// ΔW of every module, `[out, in]` in f64, with this adapter's scaling.
    pub fn deltas(&self) -> BTreeMap<String, (Vec<f64>, [usize; 2])> {
        let s = scaling(&self.config);
        self.modules
            .iter()
            .map(|(p, ((a, sa), (b, sb)))| (p.clone(), (delta(a, b, sa[0], sa[1], sb[0], s), [sb[0], sa[1]])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(r: usize, d_in: usize, d_out: usize, seed: u64, rslora: bool) -> PeftAdapter {
        let mut rng = Rng::new(seed);
        let mut draw = |n: usize| (0..n).map(|_| (rng.next_f64() - 0.5) as f32).collect::<Vec<f32>>();
        let a = draw(r * d_in);
        let b = draw(d_out * r);
        let config: PeftConfig = serde_json::from_value(serde_json::json!({
            "r": r, "lora_alpha": 2.0 * r as f64, "target_modules": ["q_proj"], "use_rslora": rslora
        }))
        .unwrap();
        PeftAdapter { config, modules: BTreeMap::from([("m.q_proj".to_string(), ((a, [r, d_in]), (b, [d_out, r])))]) }
    }

    fn max_diff(x: &[f64], y: &[f64]) -> f64 {
        x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn cat_is_exactly_the_weighted_sum_of_the_updates() {
        let (x, y) = (adapter(2, 6, 5, 1, false), adapter(3, 6, 5, 2, false));
        let opts = CombineOptions::new(Combination::Cat, vec![0.7, -1.5]);
        let (m, _) = combine(&[&x, &y], &opts, None).unwrap();
        assert_eq!(m.config.r, 5);
        let want: Vec<f64> = x.deltas()["m.q_proj"].0.iter().zip(&y.deltas()["m.q_proj"].0).map(|(a, b)| 0.7 * a - 1.5 * b).collect();
        assert!(max_diff(&m.deltas()["m.q_proj"].0, &want) < 1e-6);
    }

    #[test]
    fn svd_at_full_rank_reproduces_the_sum_and_truncation_keeps_the_top_directions() {
        let (x, y) = (adapter(2, 8, 7, 3, false), adapter(2, 8, 7, 4, false));
        let mut opts = CombineOptions::new(Combination::Svd, vec![1.0, 0.5]);
        opts.svd_rank = Some(4);
        let (m, trace) = combine(&[&x, &y], &opts, Some("m.q_proj")).unwrap();
        let want: Vec<f64> = x.deltas()["m.q_proj"].0.iter().zip(&y.deltas()["m.q_proj"].0).map(|(a, b)| a + 0.5 * b).collect();
        assert!(max_diff(&m.deltas()["m.q_proj"].0, &want) < 1e-5);
        let t = trace.unwrap();
        assert_eq!(t.cut, Some(4));
        // The sum of two rank-2 updates has rank 4: the singular values past the cut vanish.
        let s = t.singular_values.unwrap();
        assert!(s[4] < 1e-9 * s[0], "{s:?}");
    }

    #[test]
    fn peft_s_rslora_quirk_scales_the_merged_update_by_root_r_unless_asked_not_to() {
        let (x, y) = (adapter(4, 6, 5, 5, true), adapter(4, 6, 5, 6, true));
        let mut opts = CombineOptions::new(Combination::Cat, vec![1.0, 1.0]);
        let (peft, _) = combine(&[&x, &y], &opts, None).unwrap();
        opts.scaling = Scaling::Exact;
        let (exact, _) = combine(&[&x, &y], &opts, None).unwrap();
        // r = 8, α = 8: rsLoRA scales by 8/√8 = √8, plain LoRA by 1.
        let (p, e) = (&peft.deltas()["m.q_proj"].0, &exact.deltas()["m.q_proj"].0);
        for (a, b) in p.iter().zip(e) {
            assert!((a - 8f64.sqrt() * b).abs() < 1e-6);
        }
    }

    #[test]
    fn a_rank_mismatch_for_a_factor_space_method_names_the_ranks_and_the_way_out() {
        let (x, y) = (adapter(2, 6, 5, 1, false), adapter(3, 6, 5, 2, false));
        let err = combine(&[&x, &y], &CombineOptions::new(Combination::Linear, vec![1.0, 1.0]), None).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("cat"), "{err}");
    }

    #[test]
    fn dare_is_seeded_keeps_about_density_and_rescales_exactly() {
        let big = adapter(8, 64, 64, 9, false);
        let mut opts = CombineOptions::new(Combination::DareLinear, vec![1.0, 1.0]);
        opts.density = Some(0.3);
        opts.seed = 11;
        let (m1, t1) = combine(&[&big, &big], &opts, Some("m.q_proj")).unwrap();
        let (m2, _) = combine(&[&big, &big], &opts, None).unwrap();
        assert_eq!(m1.modules, m2.modules, "the same seed gives the same adapter");
        opts.seed = 12;
        let (m3, _) = combine(&[&big, &big], &opts, None).unwrap();
        assert_ne!(m1.modules, m3.modules, "another seed, another mask");
        // Kept fraction of A's 2·512 draws within 5 binomial standard deviations of 0.3.
        let kept: f32 = t1.unwrap().kept.unwrap().iter().sum();
        let (n, p) = (2.0 * 512.0, 0.3f64);
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!((kept as f64 - n * p).abs() < 5.0 * sd, "kept {kept} of {n}");
        // Every kept value is the original divided by the density (one adapter, weight 1: the
        // factor weights are √(w·s) = √2 on each side).
        let mut rng = Rng::new(5);
        let t: Vec<f64> = (0..1000).map(|_| rng.next_f64() - 0.5).collect();
        let (p, mask) = ops::random_prune(&t, 0.25, true, &mut Rng::new(1));
        for ((x, y), k) in t.iter().zip(&p).zip(&mask) {
            assert_eq!(*y, if *k { x / 0.25 } else { 0.0 });
        }
    }
}
