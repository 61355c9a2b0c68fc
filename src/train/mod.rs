//! Training data and (in the LoRA issue) the trainer.

pub mod data;
