//! Training: data formats (`data`, `chat`) and batching (`batch`), the run configuration (`run`), the
//! trainer shared by the page and the CLI (`trainer`) with its settings (`config`) and its loss
//! (`loss`), preference pairs and DPO (`preference`), checkpoints (`checkpoint`), and a step's
//! measured time (`estimate`). The native driver of `tinytune train` is `crate::native`.

pub mod batch;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod estimate;
pub mod loss;
pub mod preference;
pub mod run;
pub mod trainer;
