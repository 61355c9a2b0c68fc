//! Small dense linear algebra in f64 on the host, for matrices with one side of size r (the LoRA
//! rank): the thin SVD through the eigendecomposition of the r×r Gram matrix, by cyclic Jacobi
//! rotations (Golub & Van Loan, "Matrix Computations", §8.5).

/// Eigenvalues and eigenvectors of a symmetric `n×n` row-major matrix, sorted by descending
/// eigenvalue. Eigenvectors are the columns of the returned row-major matrix.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * n + j].powi(2)).sum();
        let scale: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum::<f64>().max(1e-300);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0.0; n * n];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + new] = v[k * n + old];
        }
    }
    (values, vectors)
}

/// Thin SVD of a row-major `[m, r]` matrix with small r: `Y = U·diag(S)·Vᵀ`, U `[m, r]`,
/// S descending, V `[r, r]`.
pub fn svd_small(y: &[f64], m: usize, r: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut gram = vec![0.0; r * r];
    for i in 0..m {
        for a in 0..r {
            for b in 0..r {
                gram[a * r + b] += y[i * r + a] * y[i * r + b];
            }
        }
    }
    let (eig, v) = symmetric_eigen(&gram, r);
    let s: Vec<f64> = eig.iter().map(|&e| e.max(0.0).sqrt()).collect();
    let mut u = vec![0.0; m * r];
    for i in 0..m {
        for k in 0..r {
            if s[k] > 1e-300 {
                u[i * r + k] = (0..r).map(|j| y[i * r + j] * v[j * r + k]).sum::<f64>() / s[k];
            }
        }
    }
    (u, s, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_of_a_hand_made_rank_two_matrix_recovers_its_singular_values() {
        // Y = 3·e1·(1,0)ᵀ + 2·e2·(0,1)ᵀ in 3×2: singular values 3 and 2.
        let y = [3.0, 0.0, 0.0, 2.0, 0.0, 0.0];
        let (u, s, v) = svd_small(&y, 3, 2);
        assert!((s[0] - 3.0).abs() < 1e-12 && (s[1] - 2.0).abs() < 1e-12, "{s:?}");
        // Reconstruct.
        for i in 0..3 {
            for j in 0..2 {
                let x: f64 = (0..2).map(|k| u[i * 2 + k] * s[k] * v[j * 2 + k]).sum();
                assert!((x - y[i * 2 + j]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn svd_reconstructs_a_dense_matrix() {
        let y: Vec<f64> = (0..20).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
        let (u, s, v) = svd_small(&y, 5, 4);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        for i in 0..5 {
            for j in 0..4 {
                let x: f64 = (0..4).map(|k| u[i * 4 + k] * s[k] * v[j * 4 + k]).sum();
                assert!((x - y[i * 4 + j]).abs() < 1e-9, "{x} vs {}", y[i * 4 + j]);
            }
        }
    }
}
