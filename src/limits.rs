//! The bounds tinytune puts on every size that comes from outside: a model's config.json, a
//! run's settings, a request to the page's engine. A value past one is refused with a message
//! that names it, before anything is allocated from it. The README's "Limits and errors" table
//! lists them; the page's URL-hash ranges (`www/state.js`) sit inside these.

/// Tokens in a vocabulary (config.json `vocab_size`).
pub const MAX_VOCAB: usize = 1 << 22;
/// Model width (`hidden_size`, `n_embd`).
pub const MAX_HIDDEN: usize = 1 << 16;
/// The MLP's inner width (`intermediate_size`, `n_inner`).
pub const MAX_INTERMEDIATE: usize = 1 << 19;
/// Transformer blocks.
pub const MAX_LAYERS: usize = 1024;
/// Attention heads (query and key/value).
pub const MAX_HEADS: usize = 1024;
/// Width of one attention head.
pub const MAX_HEAD_DIM: usize = 1024;
/// Positions a model may be built for (`max_position_embeddings`, `n_positions`).
pub const MAX_CONTEXT: usize = 1 << 27;
/// Parameters in the whole model, counted from config.json with checked arithmetic.
pub const MAX_PARAMETERS: u64 = 1 << 40;

/// LoRA rank (also never above the smaller side of the layer it adapts).
pub const MAX_RANK: usize = 4096;
/// Sequences in one micro-batch.
pub const MAX_BATCH: usize = 4096;
/// Micro-batches accumulated into one optimizer step.
pub const MAX_GRAD_ACCUM: usize = 65536;
/// Tokens per training sequence (also never above the model's context).
pub const MAX_SEQ_LEN: usize = 1 << 20;
/// Tokens in one micro-batch (batch × sequence length): the logits alone are this × vocabulary.
pub const MAX_BATCH_TOKENS: usize = 1 << 24;
/// Optimizer steps in one run.
pub const MAX_STEPS: usize = 100_000_000;
/// Passes over the data.
pub const MAX_EPOCHS: f64 = 1e6;

/// New tokens one generation may ask for.
pub const MAX_NEW_TOKENS: usize = 1 << 20;

/// Work a chat template may do (minijinja fuel: roughly one unit per instruction).
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// Bytes a chat template may render.
pub const TEMPLATE_OUTPUT: usize = 1 << 20;
