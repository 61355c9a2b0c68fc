//! Training data and (in the LoRA issue) the trainer.

pub mod chat;
pub mod checkpoint;
pub mod data;
pub mod run;
pub mod trainer;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
