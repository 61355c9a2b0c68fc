//! The singular values of a LoRA update ΔW = s·B·A computed from the factors, without forming
//! the `out×in` matrix: thin QR of Bᵀ's transpose and of Aᵀ, then the SVD of an r×r matrix.
//!
//!   B = Q_b·R_b (out×r, r×r),  Aᵀ = Q_a·R_a (in×r, r×r)
//!   ΔW = s·Q_b·(R_b·R_aᵀ)·Q_aᵀ, and Q_b, Q_a have orthonormal columns,
//!   so σ(ΔW) = σ(s·R_b·R_aᵀ).
//!
//! The effective rank is the entropy-based one of Roy & Vetterli, "The effective rank: a measure
//! of effective dimensionality" (EUSIPCO 2007): exp(H(p)) with p_k = σ_k / Σσ.
//! Matrices here are row-major f64 slices; factors come in PEFT's orientation
//! (`lora_A` `[r, in]`, `lora_B` `[out, r]`).

use serde::Serialize;

/// Thin QR of a row-major `[m, n]` matrix (m ≥ n) by Householder reflections: returns R
/// (`[n, n]`, upper triangular). Q is not needed for singular values, so it is not formed.
pub fn qr_r(x: &[f64], m: usize, n: usize) -> Vec<f64> {
    assert!(m >= n && x.len() == m * n, "qr_r wants a tall [m, n] matrix");
    let mut a = x.to_vec();
    for k in 0..n {
        let norm = (k..m).map(|i| a[i * n + k].powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if a[k * n + k] > 0.0 { -norm } else { norm };
        // v = x − α·e₁ over rows k..m; H = I − 2·v·vᵀ / (vᵀv).
        let mut v: Vec<f64> = (k..m).map(|i| a[i * n + k]).collect();
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|t| t * t).sum();
        if vv == 0.0 {
            continue;
        }
        for j in k..n {
            let dot: f64 = (k..m).map(|i| v[i - k] * a[i * n + j]).sum();
            let f = 2.0 * dot / vv;
            for i in k..m {
                a[i * n + j] -= f * v[i - k];
            }
        }
    }
    let mut r = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            r[i * n + j] = a[i * n + j];
        }
    }
    r
}

/// Singular values of a row-major `[m, n]` matrix, descending, by one-sided Jacobi rotations
/// (Hestenes): columns are rotated pairwise until orthogonal; their norms are then the singular
/// values. Accurate for small matrices, with no squaring of the matrix.
pub fn singular_values(x: &[f64], m: usize, n: usize) -> Vec<f64> {
    assert_eq!(x.len(), m * n);
    if m < n {
        // σ(X) = σ(Xᵀ); rotate the shorter side's columns.
        let t: Vec<f64> = (0..n * m).map(|idx| x[(idx % m) * n + idx / m]).collect();
        return singular_values(&t, n, m);
    }
    let mut a = x.to_vec();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..m {
                    let (ap, aq) = (a[i * n + p], a[i * n + q]);
                    alpha += ap * ap;
                    beta += aq * aq;
                    gamma += ap * aq;
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for i in 0..m {
                    let (ap, aq) = (a[i * n + p], a[i * n + q]);
                    a[i * n + p] = c * ap - s * aq;
                    a[i * n + q] = s * ap + c * aq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut s: Vec<f64> = (0..n).map(|j| (0..m).map(|i| a[i * n + j].powi(2)).sum::<f64>().sqrt()).collect();
    s.sort_by(|x, y| y.total_cmp(x));
    s
}

/// σ(ΔW) for ΔW = scale·B·A with `a` `[r, in]` and `b` `[out, r]` (PEFT orientation), from the
/// factors only. Returns r values, descending.
pub fn lora_spectrum(a: &[f64], b: &[f64], r: usize, d_in: usize, d_out: usize, scale: f64) -> Vec<f64> {
    assert!(a.len() == r * d_in && b.len() == d_out * r, "factor shapes do not match r, in, out");
    // Thin QR needs a tall matrix; a rank above a side is padded away by using the square side.
    let tall = |x: &[f64], m: usize| -> Vec<f64> {
        if m >= r {
            qr_r(x, m, r)
        } else {
            // m < r: R is then the [m, r] matrix itself (Q = I), padded with zero rows to [r, r].
            let mut out = x.to_vec();
            out.resize(r * r, 0.0);
            out
        }
    };
    let at: Vec<f64> = (0..d_in * r).map(|idx| a[(idx % r) * d_in + idx / r]).collect(); // Aᵀ [in, r]
    let r_b = tall(b, d_out);
    let r_a = tall(&at, d_in);
    // M = s·R_b·R_aᵀ, [r, r].
    let mut m = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            m[i * r + j] = scale * (0..r).map(|k| r_b[i * r + k] * r_a[j * r + k]).sum::<f64>();
        }
    }
    singular_values(&m, r, r)
}

/// Roy & Vetterli's effective rank, exp of the entropy of σ normalised to sum 1; 0 for a zero
/// matrix. It is r for r equal singular values and near 1 when one direction dominates.
pub fn effective_rank(sigma: &[f64]) -> f64 {
    let total: f64 = sigma.iter().filter(|s| **s > 0.0).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let h: f64 = sigma.iter().filter(|s| **s > 0.0).map(|s| s / total).map(|p| -p * p.ln()).sum();
    h.exp()
}

/// A matrix shrunk for display by block means: each output cell is the mean of a block of about
/// `rows/out_rows × cols/out_cols` entries. Block means keep the low-rank structure (the result is
/// P·X·Qᵀ with averaging matrices P, Q, so its rank is at most X's).
#[derive(Clone, Debug, Serialize)]
pub struct Shrunk {
    pub values: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    /// The source size and how it was shrunk, for the page to state.
    pub from_rows: usize,
    pub from_cols: usize,
    pub method: String,
}

pub fn block_mean(x: &[f32], rows: usize, cols: usize, max_rows: usize, max_cols: usize) -> Shrunk {
    assert_eq!(x.len(), rows * cols);
    let out_rows = rows.min(max_rows.max(1));
    let out_cols = cols.min(max_cols.max(1));
    let mut values = vec![0.0f32; out_rows * out_cols];
    for oi in 0..out_rows {
        let (r0, r1) = (oi * rows / out_rows, (oi + 1) * rows / out_rows);
        for oj in 0..out_cols {
            let (c0, c1) = (oj * cols / out_cols, (oj + 1) * cols / out_cols);
            let mut sum = 0.0f64;
            for i in r0..r1 {
                for j in c0..c1 {
                    sum += x[i * cols + j] as f64;
                }
            }
            values[oi * out_cols + oj] = (sum / ((r1 - r0) * (c1 - c0)) as f64) as f32;
        }
    }
    Shrunk { values, rows: out_rows, cols: out_cols, from_rows: rows, from_cols: cols, method: shrink_method(rows, cols, out_rows, out_cols) }
}

/// How a `rows × cols` matrix shown as `out_rows × out_cols` was shrunk, in words.
pub fn shrink_method(rows: usize, cols: usize, out_rows: usize, out_cols: usize) -> String {
    if out_rows == rows && out_cols == cols {
        "every entry shown".to_string()
    } else {
        format!("block means: each cell averages about {} × {} entries", rows.div_ceil(out_rows), cols.div_ceil(out_cols))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect()
    }

    #[test]
    fn singular_values_of_a_hand_made_matrix() {
        // [[3, 0], [0, -2], [0, 0]]: singular values 3 and 2.
        let s = singular_values(&[3.0, 0.0, 0.0, -2.0, 0.0, 0.0], 3, 2);
        assert!((s[0] - 3.0).abs() < 1e-12 && (s[1] - 2.0).abs() < 1e-12, "{s:?}");
        // [[1, 1], [0, 1]]: σ² are the eigenvalues of [[1, 1], [1, 2]], (3 ± √5)/2.
        let s = singular_values(&[1.0, 1.0, 0.0, 1.0], 2, 2);
        let want = [((3.0 + 5f64.sqrt()) / 2.0).sqrt(), ((3.0 - 5f64.sqrt()) / 2.0).sqrt()];
        assert!((s[0] - want[0]).abs() < 1e-12 && (s[1] - want[1]).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn factor_spectrum_matches_a_dense_svd_of_delta_w_on_random_factors() {
        let mut rng = Rng::new(7);
        for &(r, d_in, d_out, scale) in &[(4usize, 24usize, 17usize, 2.0f64), (8, 16, 40, 0.5), (3, 3, 9, 1.0), (6, 5, 30, 4.0)] {
            let a = random(&mut rng, r * d_in);
            let b = random(&mut rng, d_out * r);
            let fast = lora_spectrum(&a, &b, r, d_in, d_out, scale);
            // The dense reference: form ΔW = s·B·A, [out, in], and take all its singular values.
            let mut dw = vec![0.0; d_out * d_in];
            for i in 0..d_out {
                for j in 0..d_in {
                    dw[i * d_in + j] = scale * (0..r).map(|k| b[i * r + k] * a[k * d_in + j]).sum::<f64>();
                }
            }
            let dense = singular_values(&dw, d_out, d_in);
            assert_eq!(fast.len(), r);
            for k in 0..r.min(d_in).min(d_out) {
                assert!((fast[k] - dense[k]).abs() < 1e-4, "r={r} σ{k}: {} vs dense {}", fast[k], dense[k]);
            }
            // Beyond min(in, out) the update has no more directions.
            for s in fast.iter().skip(d_in.min(d_out)) {
                assert!(s.abs() < 1e-9, "{fast:?}");
            }
            // The Frobenius norm is the root of the sum of σ²: a third, independent check.
            let fro = dw.iter().map(|x| x * x).sum::<f64>().sqrt();
            let from_sigma = fast.iter().map(|s| s * s).sum::<f64>().sqrt();
            assert!((fro - from_sigma).abs() < 1e-9 * fro.max(1.0));
        }
    }

    #[test]
    fn a_fresh_adapter_with_b_zero_has_an_all_zero_spectrum_and_effective_rank_zero() {
        let mut rng = Rng::new(1);
        let a = random(&mut rng, 4 * 10);
        let s = lora_spectrum(&a, &vec![0.0; 12 * 4], 4, 10, 12, 2.0);
        assert!(s.iter().all(|v| *v == 0.0));
        assert_eq!(effective_rank(&s), 0.0);
    }

    #[test]
    fn effective_rank_is_r_for_equal_values_and_one_for_a_single_direction() {
        assert!((effective_rank(&[2.0, 2.0, 2.0, 2.0]) - 4.0).abs() < 1e-12);
        assert!((effective_rank(&[5.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        // p = (3/4, 1/4): H = −(¾ ln ¾ + ¼ ln ¼) = 0.5623, exp(H) = 1.7548.
        assert!((effective_rank(&[3.0, 1.0]) - 1.754765).abs() < 1e-6);
    }

    #[test]
    fn block_means_average_whole_blocks_and_say_so() {
        // 4×4 of 0..16 shrunk to 2×2: top-left block {0, 1, 4, 5} has mean 2.5.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let s = block_mean(&x, 4, 4, 2, 2);
        assert_eq!((s.rows, s.cols), (2, 2));
        assert_eq!(s.values, vec![2.5, 4.5, 10.5, 12.5]);
        assert!(s.method.contains("2 × 2"), "{}", s.method);
        let same = block_mean(&x, 4, 4, 8, 8);
        assert_eq!(same.values, x);
        assert_eq!(same.method, "every entry shown");
    }
}
