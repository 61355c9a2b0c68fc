//! Training: data formats and batching (`data`, `chat`), the run configuration (`run`), the
//! trainer shared by the page and the CLI (`trainer`), preference pairs and DPO (`preference`) and
//! its checkpoints (`checkpoint`), and a step's measured time (`estimate`). The
//! native driver of `tinytune train` is `crate::native`.

pub mod chat;
pub mod checkpoint;
pub mod data;
pub mod estimate;
pub mod preference;
pub mod run;
pub mod trainer;
