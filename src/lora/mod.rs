//! LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") the efficient
//! way: the adapted layer computes `x·W₀ + s·((dropout(x)·A)·B)` and never forms ΔW while
//! training. Scaling `s = α/r`, or `α/√r` with rsLoRA (Kalajdzievski 2023). Initialisations
//! follow PEFT: A Kaiming-uniform (a = √5) and B = 0, Gaussian A (std 1/r), or PiSSA (Meng et al.
//! 2024: A and B from the top-r singular triplets of W₀, the base keeps the residual).
//!
//! Three verbs: `LoraAdapter::forward`, `LoraAdapter::delta`, and merging into the base
//! (`crate::merge::into_base` / `out_of_base`, with the other ways of combining adapters).

pub mod peft;

use burn::tensor::{Distribution, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::model::Model;
use crate::{Error, Result};

/// Which linear layers get adapters, by Hugging Face module name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Targets {
    /// Names such as `q_proj` or `c_attn`; a module matches when its path ends in `.name`.
    Names(Vec<String>),
    /// The string `all-linear`: every linear layer except the output head (PEFT's meaning).
    All(String),
}

impl Targets {
    pub fn parse(s: &str) -> Targets {
        if s == "all-linear" {
            Targets::All(s.into())
        } else {
            Targets::Names(s.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect())
        }
    }
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Targets::All(_) => true,
            Targets::Names(names) => names.iter().any(|n| path == n || path.ends_with(&format!(".{n}"))),
        }
    }
    /// As the user wrote them: `q_proj, v_proj` or `all-linear`.
    pub fn describe(&self) -> String {
        match self {
            Targets::All(_) => "all-linear".into(),
            Targets::Names(names) if names.is_empty() => "(none given)".into(),
            Targets::Names(names) => names.join(", "),
        }
    }
    /// The names PEFT writes in `target_modules`.
    pub fn names(&self, paths: &[String]) -> Vec<String> {
        let mut out: Vec<String> = paths
            .iter()
            .filter(|p| self.matches(p))
            .map(|p| p.rsplit('.').next().unwrap_or(p).to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Default,
    Gaussian,
    Pissa,
}

impl std::str::FromStr for Init {
    type Err = Error;
    fn from_str(s: &str) -> Result<Init> {
        match s {
            "default" | "kaiming" => Ok(Init::Default),
            "gaussian" => Ok(Init::Gaussian),
            "pissa" => Ok(Init::Pissa),
            _ => Err(Error::input(format!("unknown LoRA init '{s}': use default, gaussian or pissa"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub rslora: bool,
    pub targets: Targets,
    pub init: Init,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            rslora: false,
            targets: Targets::All("all-linear".into()),
            init: Init::Default,
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        if self.rslora { self.alpha / (self.r as f64).sqrt() } else { self.alpha / self.r as f64 }
    }
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::input("LoRA rank r must be at least 1"));
        }
        if self.r > crate::limits::MAX_RANK {
            return Err(Error::input(format!(
                "LoRA rank r {} is over tinytune's limit of {} (and a rank is never above the smaller side of a layer)",
                self.r,
                crate::limits::MAX_RANK
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::input(format!("LoRA dropout must be in [0, 1), not {}", self.dropout)));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::input(format!("LoRA alpha must be positive, not {}", self.alpha)));
        }
        Ok(())
    }
}

/// One adapter on one layer. Stored in the layout the forward pass wants: A `[in, r]`,
/// B `[r, out]` (PEFT files hold the transposes: `lora_A` `[r, in]`, `lora_B` `[out, r]`).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub name: String,
    pub a: Tensor<2>,
    pub b: Tensor<2>,
    pub scale: f64,
    pub dropout: f64,
    pub enabled: bool,
    /// Dropout applies only while training.
    pub training: bool,
    /// Multi-LoRA serving: `[B, 1, 1]`, 1 for the batch rows this adapter serves, 0 elsewhere;
    /// `None` serves every row (see `route`).
    pub rows: Option<Tensor<3>>,
    /// PiSSA: the initial factors (A₀, B₀) this adapter started from, while the base holds the
    /// residual W₀ - s·A₀·B₀. Export turns it into a plain LoRA against W₀; `remove` restores W₀.
    pub initial: Option<(Tensor<2>, Tensor<2>)>,
}

impl LoraAdapter {
    /// An enabled adapter from A `[in, r]` and B `[r, out]`.
    pub fn new(name: &str, a: Tensor<2>, b: Tensor<2>, scale: f64, dropout: f64) -> Self {
        LoraAdapter { name: name.to_string(), a, b, scale, dropout, enabled: true, training: false, rows: None, initial: None }
    }

    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// `[N, in] -> [N, out]`: `s·((dropout(x)·A)·B)`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = if self.training && self.dropout > 0.0 {
            let keep = x.random_like(Distribution::Bernoulli(1.0 - self.dropout));
            x * keep / (1.0 - self.dropout)
        } else {
            x
        };
        // The scale goes on the rank-r intermediate, `[N, r]`, not on the `[N, out]` product: the
        // same value up to rounding, and a multiply (and its gradient) over r columns, not out.
        use crate::model::fused::matmul;
        matmul(matmul(x, self.a.clone()) * self.scale, self.b.clone())
    }

    /// ΔW = s·A·B, `[in, out]`. Formed only for merging and inspection.
    pub fn delta(&self) -> Tensor<2> {
        self.a.clone().matmul(self.b.clone()) * self.scale
    }
}

fn tensor(values: Vec<f32>, shape: [usize; 2], device: &burn::tensor::Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Uniform in [-bound, bound) and standard normal draws from our seeded generator, so an init
/// is the same on every device.
fn uniform(rng: &mut Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect()
}
fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

/// Add a new adapter named `name` to every targeted layer. Returns how many layers got one.
pub async fn attach(model: &mut Model, name: &str, cfg: &LoraConfig, seed: u64) -> Result<usize> {
    cfg.validate()?;
    let device = model.device.clone();
    let paths: Vec<String> = model.arch.linears().into_iter().map(|(p, _)| p).collect();
    let targeted: Vec<&String> = paths.iter().filter(|p| cfg.targets.matches(p)).collect();
    if targeted.is_empty() {
        let names: Vec<String> = Targets::All(String::new()).names(&paths);
        return Err(Error::input(format!(
            "no layer matches the LoRA targets {}; this {} model has {}",
            cfg.targets.describe(),
            model.config.model_type(),
            names.join(", ")
        )));
    }
    // Check every layer before changing any, so a refusal leaves the model as it was.
    for (path, linear) in model.arch.linears() {
        if !cfg.targets.matches(&path) {
            continue;
        }
        if linear.adapter(name).is_some() {
            return Err(Error::input(format!("{path} already has an adapter named '{name}'")));
        }
        let (d_in, d_out, r) = (linear.d_in(), linear.d_out(), cfg.r);
        if r > d_in.min(d_out) {
            return Err(Error::input(format!(
                "LoRA rank {r} is above the smaller side of {path} ({d_in}×{d_out}): a rank past {} adds parameters \
                 but no expressiveness. Use a rank of {} or less",
                d_in.min(d_out),
                d_in.min(d_out)
            )));
        }
        if cfg.init == Init::Pissa && !matches!(linear.base, crate::model::layers::Base::Dense(_)) {
            return Err(Error::input(format!(
                "{path} is stored in 4 bits: PiSSA takes its adapter from the weight's singular vectors and \
                 leaves the residual as the base, which needs the f32 weight. Use --init default with QLoRA"
            )));
        }
    }
    let mut rng = Rng::new(seed);
    let mut count = 0;
    for (path, linear) in model.arch.linears_mut() {
        if !cfg.targets.matches(&path) {
            continue;
        }
        let (d_in, d_out, r) = (linear.d_in(), linear.d_out(), cfg.r);
        let mut initial = false;
        let (a, b) = match cfg.init {
            // PEFT: kaiming_uniform_(lora_A, a=√5) on [r, in] gives bound 1/√in.
            Init::Default => (uniform(&mut rng, d_in * r, 1.0 / (d_in as f64).sqrt()), vec![0.0; r * d_out]),
            Init::Gaussian => (normal(&mut rng, d_in * r, 1.0 / r as f64), vec![0.0; r * d_out]),
            Init::Pissa => {
                let crate::model::layers::Base::Dense(w) = &linear.base else {
                    return Err(Error::input(format!("{path}: PiSSA needs an f32 base weight")));
                };
                let w = crate::model::read_f32(w.clone()).await?;
                let (a, b, residual) = pissa(&w, d_in, d_out, r, cfg.scale(), &mut rng).map_err(|e| Error::input(format!("PiSSA on {path}: {e}")))?;
                linear.base = crate::model::layers::Base::Dense(tensor(residual, [d_in, d_out], &device));
                initial = true;
                (a, b)
            }
        };
        let (a, b) = (tensor(a, [d_in, r], &device), tensor(b, [r, d_out], &device));
        let mut adapter = LoraAdapter::new(name, a.clone(), b.clone(), cfg.scale(), cfg.dropout);
        if initial {
            adapter.initial = Some((a, b));
        }
        linear.adapters.push(adapter);
        count += 1;
    }
    Ok(count)
}

/// Take the adapter `name` off every layer. A PiSSA adapter gives the base back its top singular
/// directions (W₀ = residual + s·A₀·B₀, exact up to f32 rounding), so the next adapter, a merge
/// or an evaluation sees the original model. Returns how many layers had one.
pub fn remove(model: &mut Model, name: &str) -> usize {
    let mut count = 0;
    for (_, linear) in model.arch.linears_mut() {
        let Some(i) = linear.adapters.iter().position(|a| a.name == name) else { continue };
        let adapter = linear.adapters.remove(i);
        if let (Some((a0, b0)), crate::model::layers::Base::Dense(w)) = (adapter.initial, &linear.base) {
            linear.base = crate::model::layers::Base::Dense(w.clone() + a0.matmul(b0) * adapter.scale);
        }
        count += 1;
    }
    count
}

/// Replace the factors of the adapter `into` with those of the adapter `from` (same shapes), and
/// drop `from`: resuming a PiSSA run re-derives A₀, B₀ and the residual from the base and the
/// seed, then takes the trained A, B from the checkpoint.
pub fn replace_factors(model: &mut Model, into: &str, from: &str) -> Result<()> {
    for (path, linear) in model.arch.linears_mut() {
        let Some(i) = linear.adapters.iter().position(|a| a.name == from) else { continue };
        let src = linear.adapters.remove(i);
        let Some(dst) = linear.adapters.iter_mut().find(|a| a.name == into) else {
            return Err(Error::input(format!("{path} has no adapter named '{into}'")));
        };
        if dst.a.dims() != src.a.dims() || dst.b.dims() != src.b.dims() {
            return Err(Error::input(format!(
                "{path}: the checkpoint's factors are {:?} and {:?}, the run's {:?} and {:?}",
                src.a.dims(), src.b.dims(), dst.a.dims(), dst.b.dims()
            )));
        }
        dst.a = src.a;
        dst.b = src.b;
    }
    Ok(())
}

/// PiSSA init from W₀ `[in, out]` (row-major): with W₀ᵀ = U S Vᵀ (PEFT's view, `[out, in]`),
/// `lora_A = √(S_r/s) V_rᵀ`, `lora_B = U_r √(S_r/s)`, and the base keeps W₀ - s·A·B. Returns
/// A `[in, r]`, B `[r, out]` and the residual, all row-major. The top-r triplets come from
/// subspace iteration in f64 (PEFT's fast `pissa_niter_k` does the same, as randomized SVD), at
/// O(in·out·r) per iteration rather than a full SVD's O(in·out·min(in, out)).
fn pissa(w: &[f32], d_in: usize, d_out: usize, r: usize, scale: f64, rng: &mut Rng) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    // Y = W₀ᵀ·Q `[out, r]` for Q `[in, r]`.
    let mul_w = |q: &[f64]| {
        let mut y = vec![0.0; d_out * r];
        for i in 0..d_in {
            for o in 0..d_out {
                let wi = w[i * d_out + o];
                for k in 0..r {
                    y[o * r + k] += wi * q[i * r + k];
                }
            }
        }
        y
    };
    // Q = W₀·Y `[in, r]`.
    let mul_wt = |y: &[f64]| {
        let mut q = vec![0.0; d_in * r];
        for i in 0..d_in {
            for o in 0..d_out {
                let wi = w[i * d_out + o];
                for k in 0..r {
                    q[i * r + k] += wi * y[o * r + k];
                }
            }
        }
        q
    };
    // The top right singular vectors of W₀ᵀ (its in-space) via Q ← orth(W₀·W₀ᵀ·Q).
    let deficient = |_| Error::input(format!("the weight has fewer than {r} independent directions: use a lower rank or --init default"));
    let start: Vec<f64> = normal(rng, d_in * r, 1.0).into_iter().map(f64::from).collect();
    let mut q = crate::linalg::orthonormal_columns(&start, d_in, r).map_err(deficient)?;
    for _ in 0..30 {
        q = crate::linalg::orthonormal_columns(&mul_wt(&mul_w(&q)), d_in, r).map_err(deficient)?;
    }
    // Rayleigh-Ritz: Y = W₀ᵀQ `[out, r]`; its SVD gives the triplets in this subspace:
    // U_r = U_y, V_r = Q·V_y.
    let (u_small, s, vt_small) = crate::linalg::svd(&mul_w(&q), d_out, r)?;
    let mut vr = vec![0.0; d_in * r];
    for i in 0..d_in {
        for k in 0..r {
            vr[i * r + k] = (0..r).map(|j| q[i * r + j] * vt_small[k * r + j]).sum();
        }
    }
    let mut a = vec![0f32; d_in * r];
    let mut b = vec![0f32; r * d_out];
    for k in 0..r {
        let root = (s[k] / scale).sqrt();
        for i in 0..d_in {
            a[i * r + k] = (vr[i * r + k] * root) as f32;
        }
        for o in 0..d_out {
            b[k * d_out + o] = (u_small[o * r + k] * root) as f32;
        }
    }
    let mut residual = vec![0f32; d_in * d_out];
    for i in 0..d_in {
        for o in 0..d_out {
            let ab: f64 = (0..r).map(|k| a[i * r + k] as f64 * b[k * d_out + o] as f64).sum();
            residual[i * d_out + o] = (w[i * d_out + o] - scale * ab) as f32;
        }
    }
    Ok((a, b, residual))
}

/// Serve a batch whose rows use different adapters (multi-LoRA, as LoRAX, S-LoRA and vLLM serve):
/// `per_row[b]` names row b's adapter, or `None` for the base alone. Every adapter on the model is
/// routed: enabled for its rows, off for the others, and disabled where no row uses it. The
/// routing holds for batches of `per_row.len()` rows until `unroute`.
pub fn route(model: &mut Model, per_row: &[Option<&str>]) -> Result<()> {
    let device = model.device.clone();
    let known: std::collections::BTreeSet<String> =
        model.arch.linears().iter().flat_map(|(_, l)| l.adapters.iter().map(|a| a.name.clone())).collect();
    if let Some(missing) = per_row.iter().flatten().find(|n| !known.contains(**n)) {
        return Err(Error::input(format!(
            "no adapter named '{missing}' is loaded; loaded: {}",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    for (_, linear) in model.arch.linears_mut() {
        for a in &mut linear.adapters {
            let mask: Vec<f32> = per_row.iter().map(|r| if *r == Some(a.name.as_str()) { 1.0 } else { 0.0 }).collect();
            a.enabled = mask.iter().any(|&m| m > 0.0);
            a.rows = Some(Tensor::from_data(TensorData::new(mask, [per_row.len(), 1, 1]), &device));
        }
    }
    Ok(())
}

/// Back to ordinary serving: every adapter serves every row and is enabled.
pub fn unroute(model: &mut Model) {
    for (_, linear) in model.arch.linears_mut() {
        for a in &mut linear.adapters {
            a.rows = None;
            a.enabled = true;
        }
    }
}

/// Enable exactly the named adapters (and disable the others) on every layer.
pub fn set_active(model: &mut Model, names: &[&str]) {
    for (_, linear) in model.arch.linears_mut() {
        for a in &mut linear.adapters {
            a.enabled = names.contains(&a.name.as_str());
        }
    }
}
