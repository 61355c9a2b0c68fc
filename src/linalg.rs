//! Dense linear algebra on host matrices (row-major f64), through burn's `linalg` on the CPU
//! backend: the SVD behind PiSSA, SVD merges and LoRA extraction; and orthonormal bases.

use burn::tensor::{Tensor, TensorData};

use crate::{Error, Result};

fn read(d: TensorData) -> Result<Vec<f64>> {
    d.convert::<f64>().try_into_vec::<f64>().map_err(|e| Error::input(format!("linear algebra: {e:?}")))
}

fn host(m: &[f64], rows: usize, cols: usize) -> Tensor<2> {
    let device = burn::tensor::Device::flex();
    Tensor::<2>::from_data(TensorData::new(m.to_vec(), [rows, cols]), (&device, burn::tensor::DType::F64))
}

/// The reduced SVD of a row-major `[rows, cols]` matrix: U `[rows, p]`, S `[p]` descending, Vᵀ
/// `[p, cols]`, p = min(rows, cols).
pub fn svd(m: &[f64], rows: usize, cols: usize) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (u, s, vt) = burn::linalg::svd::<2, 1>(host(m, rows, cols), 200);
    let (u, s, vt) = (read(u.into_data())?, read(s.into_data())?, read(vt.into_data())?);
    if s.iter().any(|x| !x.is_finite()) {
        return Err(Error::input("the SVD did not converge"));
    }
    Ok((u, s, vt))
}


/// An orthonormal basis of the column space of a row-major `[rows, cols]` matrix (rows ≥ cols):
/// modified Gram-Schmidt in f64, O(rows·cols²). (burn's `linalg::qr` is Householder in the
/// default float type and forms the full `[rows, rows]` Q: for PiSSA's tall `[in, r]` blocks that
/// is in² work and memory per call instead of in·r².)
pub fn orthonormal_columns(m: &[f64], rows: usize, cols: usize) -> Result<Vec<f64>> {
    let mut q = m.to_vec();
    for j in 0..cols {
        for p in 0..j {
            let dot: f64 = (0..rows).map(|i| q[i * cols + j] * q[i * cols + p]).sum();
            for i in 0..rows {
                q[i * cols + j] -= dot * q[i * cols + p];
            }
        }
        let norm = (0..rows).map(|i| q[i * cols + j] * q[i * cols + j]).sum::<f64>().sqrt();
        if !(norm > 1e-300) {
            return Err(Error::input(format!("orthonormal basis: column {j} is (numerically) dependent on the ones before")));
        }
        for i in 0..rows {
            q[i * cols + j] /= norm;
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_and_qr_reconstruct() {
        let (rows, cols) = (7, 4);
        let m: Vec<f64> = (0..rows * cols).map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0).collect();
        let (u, s, vt) = svd(&m, rows, cols).unwrap();
        for i in 0..rows {
            for j in 0..cols {
                let x: f64 = (0..cols).map(|k| u[i * cols + k] * s[k] * vt[k * cols + j]).sum();
                assert!((x - m[i * cols + j]).abs() < 1e-9, "U·S·Vᵀ");
            }
        }
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "descending");
        let q = orthonormal_columns(&m, rows, cols).unwrap();
        for a in 0..cols {
            for b in 0..cols {
                let dot: f64 = (0..rows).map(|i| q[i * cols + a] * q[i * cols + b]).sum();
                assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-9, "QᵀQ = I");
            }
        }
    }
}
