//! Evaluation loss as `tinytune eval` defines it: each record is tokenized on its own (special
//! tokens as the tokenizer's post-processor adds them) and truncated to `seq_len`; the loss is
//! the token-weighted mean cross-entropy of predicting token t+1 from tokens ≤ t over all records.

use serde::Serialize;

use crate::model::Model;
use crate::Result;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    pub loss: f64,
    pub perplexity: f64,
    /// Predicted tokens.
    pub tokens: usize,
}

pub async fn eval_loss(model: &Model, texts: &[String], seq_len: usize, mut progress: impl FnMut(usize, usize)) -> Result<EvalReport> {
    let seq_len = seq_len.min(model.context());
    let (mut nll, mut tokens) = (0.0, 0);
    for (i, text) in texts.iter().enumerate() {
        let mut ids = model.tokenizer.encode(text, true)?;
        ids.truncate(seq_len);
        let (s, n) = model.sequence_nll(&ids).await?;
        nll += s;
        tokens += n;
        progress(i + 1, texts.len());
    }
    if tokens == 0 {
        return Err(crate::Error::input("the data has no record of two or more tokens to evaluate"));
    }
    let loss = nll / tokens as f64;
    Ok(EvalReport { loss, perplexity: loss.exp(), tokens })
}
