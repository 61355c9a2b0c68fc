//! Training: data formats and batching (`data`, `chat`), the run configuration (`run`), the
//! trainer shared by the page and the CLI (`trainer`) and its checkpoints (`checkpoint`). The
//! native driver of `tinytune train` is `crate::native`.

pub mod chat;
pub mod checkpoint;
pub mod data;
pub mod run;
pub mod trainer;
