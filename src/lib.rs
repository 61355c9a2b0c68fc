//! tinytune: LoRA and QLoRA finetuning of small transformers, in the browser on WebGPU and
//! natively on Vulkan, Metal, DX12, CUDA or the CPU. One core, two builds (see DESIGN.md).
//!
//! The library is the whole engine; `src/bin/tinytune/` (native) and `src/web/` (wasm32)
//! are thin shells over it.

pub mod blas;
pub mod check;
pub mod device;
mod error;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod limits;
pub mod linalg;
pub mod lora;
pub mod merge;
pub mod model;
pub mod quant;
pub mod rng;
pub mod serving;
pub mod tasks;
pub mod train;

#[cfg(not(target_arch = "wasm32"))]
pub mod files;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
