//! Merging: an adapter into its base and out again (`base`), several LoRA adapters into one as
//! PEFT's `add_weighted_adapter` does (`combine`), whole models as mergekit does (`models`, from
//! the YAML config parsed in `recipe`), a LoRA extracted from a finetuned model (`extract`), and
//! the task-vector operations they share (`ops`).

pub mod base;
pub mod combine;
pub mod extract;
#[cfg(not(target_arch = "wasm32"))]
pub mod models;
pub mod ops;
#[cfg(not(target_arch = "wasm32"))]
pub mod recipe;

pub use base::{into_base, out_of_base};
pub use combine::{Combination, CombineOptions, combine};
