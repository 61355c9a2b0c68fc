//! Number formats below f32: bitsandbytes' 4-bit NF4/FP4 with double quantization (`nf4`), its
//! serialization in checkpoints (`bnb`), GGUF's Q4_0, Q4_1 and Q4_K kept as a GGUF file stores them (`gguf4`), and its Q8_0 and Q6_K
//! (`q8`, on the CPU engine), the kernels that dequantize and multiply on the device
//! (`kernels`, WGSL in `shaders/`; `cpu` on the CPU engine), and the precision lab's other formats (`formats`).

pub mod bnb;
mod cpu;
pub(crate) use cpu::q4_product;
pub mod formats;
pub mod gguf4;
pub mod kernels;
pub mod nf4;
pub mod q8;

pub use kernels::{Q4Layout, Q4Tensor};
pub use nf4::{QuantType, Quant4};
