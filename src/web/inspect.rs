//! What the page shows of a run: validation loss, ΔW and its spectra, the memory ledger, task
//! metrics, the tokenized data preview and the precision lab.

use wasm_bindgen::prelude::*;

use crate::inspect::memory::{self, ModelShape, RunShape};
use crate::tasks::Task;
use crate::train::batch::split;
use crate::train::data::{DataOptions, OnBadLine, load_dataset};

use super::{Session, js_err, to_js, to_js_json};

#[wasm_bindgen]
impl Session {
    /// Token-weighted mean loss on the run's held-out examples; records it for early stopping.
    /// Resolves to `{loss, perplexity, best}`, or null when the run has no validation split.
    #[wasm_bindgen(js_name = validLoss)]
    pub fn valid_loss(&self) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let (trainer, valid) = (self.trainer.clone(), self.valid.clone());
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let examples = valid.borrow().clone();
            if examples.is_empty() {
                return Ok(JsValue::NULL);
            }
            let mut t = trainer.try_borrow_mut().map_err(|_| JsError::new("a training step is running"))?;
            let t = t.as_mut().ok_or_else(|| JsError::new("nothing is training: start a run first"))?;
            let mut guard = model.try_borrow_mut().map_err(|_| JsError::new("the model is busy"))?;
            let loss = t.evaluate(guard.as_mut().expect("checked"), &examples).await.map_err(js_err)?;
            let best = t.record_eval(loss);
            to_js(&serde_json::json!({ "loss": loss, "perplexity": loss.exp(), "best": best })).map_err(JsValue::from)
        }))
    }

    /// Paths of the layers that carry the adapter "default".
    #[wasm_bindgen(js_name = adaptedPaths)]
    pub fn adapted_paths(&self) -> Result<Vec<String>, JsError> {
        let m = self.model()?;
        let m = m.borrow();
        Ok(crate::inspect::adapted_paths(m.as_ref().expect("checked"), "default"))
    }

    /// The singular values of ΔW (from the factors) and the effective rank, per adapted module.
    pub fn spectra(&self) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy"))?;
            let s = crate::inspect::spectra(guard.as_ref().expect("checked"), "default").await.map_err(js_err)?;
            to_js(&s).map_err(JsValue::from)
        }))
    }

    /// A, B and ΔW of the adapter on `path`, shrunk to at most `max_side` a side by block means.
    #[wasm_bindgen(js_name = adapterMatrices)]
    pub fn adapter_matrices(&self, path: String, max_side: usize) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy"))?;
            let m = crate::inspect::matrices(guard.as_ref().expect("checked"), &path, "default", max_side.max(1)).await.map_err(js_err)?;
            to_js_json(&m).map_err(JsValue::from)
        }))
    }

    /// The memory ledger of the current (or last) run: predicted parts, the device's measured
    /// bytes and the remainder, and the same model under the other methods.
    #[wasm_bindgen(js_name = memoryLedger)]
    pub fn memory_ledger(&self) -> Result<JsValue, JsError> {
        let run = self.run.borrow().clone().ok_or_else(|| JsError::new("start a run first: the ledger is for a run"))?;
        let cfg = run.train_config();
        let mut guard = self.model.try_borrow_mut().map_err(|_| JsError::new("the model is busy"))?;
        let model = guard.as_mut().ok_or_else(|| JsError::new("no model is loaded yet: load one first"))?;
        let shape = ModelShape::of(model);
        let run_shape = RunShape::of(&cfg, model);
        let predicted = memory::predict(&shape, &run_shape);
        let base = memory::base_weights(model, predicted.weights, *self.base_in_use.borrow());
        to_js(&memory::ledger(&shape, &run_shape, memory::measure(&self.opened.device), Some(base)))
    }

    /// Score the loaded model (with its enabled adapters) on a task: `task_json` and `test_jsonl`
    /// are the task's files; `shots` test examples are written before each scored prompt
    /// (few-shot prompting; 0 for none); `on_progress(done, total)` is called per example. Resolves to the
    /// task report (metrics and a few samples).
    #[wasm_bindgen(js_name = taskMetric)]
    pub fn task_metric(&self, name: String, task_json: String, test_jsonl: String, limit: usize, shots: usize, on_progress: js_sys::Function) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let task = Task::from_texts(&task_json, &test_jsonl, &name).and_then(|t| t.few_shot(shots)).map_err(js_err)?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy"))?;
            let report = crate::tasks::evaluate(guard.as_ref().expect("checked"), &task, Some(limit), |done, total| {
                let _ = on_progress.call2(&JsValue::NULL, &JsValue::from(done as u32), &JsValue::from(total as u32));
            })
            .await
            .map_err(js_err)?;
            to_js(&report).map_err(JsValue::from)
        }))
    }

    /// The first `n` examples of a data file as the trainer sees them: per example, its pieces
    /// `[text, trained]` (trained: the token carries loss). Unknown formats give the loader's
    /// error.
    #[wasm_bindgen(js_name = previewData)]
    pub fn preview_data(&self, data_name: &str, data_text: &str, seq_len: usize, train_on_prompt: bool, n: usize) -> Result<JsValue, JsError> {
        let m = self.model()?;
        let m = m.borrow();
        let model = m.as_ref().expect("checked");
        let opts = DataOptions { seq_len: seq_len.max(2), train_on_prompt, on_bad_line: OnBadLine::Skip };
        let data = load_dataset(data_name, data_text, &model.tokenizer, &opts).map_err(js_err)?;
        let mut out = Vec::new();
        for ex in data.examples.iter().take(n) {
            let mut pieces: Vec<(String, bool)> = Vec::new();
            for (i, id) in ex.ids.iter().enumerate() {
                // Token i is predicted from the tokens before it; the first never carries loss.
                let trained = i > 0 && ex.target[i];
                let text = model.tokenizer.decode(&[*id]).map_err(js_err)?;
                pieces.push((text, trained));
            }
            out.push(pieces);
        }
        // Over the whole file: the tokens the model reads and those that carry the loss.
        let rows = data.examples.iter().flat_map(|e| std::iter::once(e).chain(e.rejected.as_deref()));
        let (mut tokens, mut learned) = (0usize, 0usize);
        for e in rows {
            tokens += e.ids.len();
            learned += e.target.iter().skip(1).filter(|t| **t).count();
        }
        to_js(&serde_json::json!({ "examples": out, "total": data.examples.len(), "skipped": data.skipped.len(),
            "format": format!("{:?}", data.format), "tokens": tokens, "learned": learned }))
    }
}

#[wasm_bindgen]
impl Session {
    /// Paths of every linear layer (what the precision lab can show), in model order.
    #[wasm_bindgen(js_name = linearPaths)]
    pub fn linear_paths(&self) -> Result<Vec<String>, JsError> {
        let m = self.model()?;
        let m = m.borrow();
        Ok(m.as_ref().expect("checked").arch.linears().into_iter().map(|(p, _)| p).collect())
    }

    /// The precision lab on one weight matrix: its histogram in `bins` bins, the NF4 levels of
    /// one block, and every format's bits and error. Resolves to the report.
    #[wasm_bindgen(js_name = precisionMatrix)]
    pub fn precision_matrix(&self, path: String, bins: usize) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy"))?;
            let r = crate::inspect::precision::matrix_report(guard.as_ref().expect("checked"), &path, bins).await.map_err(js_err)?;
            to_js_json(&r).map_err(JsValue::from)
        }))
    }

    /// The held-out loss with every linear weight in `format` (`fp32`, `fp16`, `bf16`,
    /// `fp8_e4m3`, `fp8_e5m2`, `int8`, `fp4`, `nf4`, `nf4_dq`): the data's held-out fifth (at most
    /// `limit` examples), scored as the trainer scores validation. Resolves to `{loss, examples}`.
    #[wasm_bindgen(js_name = precisionLoss)]
    pub fn precision_loss(&self, format: String, data_name: String, data_text: String, seq_len: usize, limit: usize) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let format: crate::quant::formats::Format = serde_json::from_value(serde_json::Value::String(format.clone()))
            .map_err(|_| JsError::new(&format!("unknown number format '{format}'")))?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = model.try_borrow_mut().map_err(|_| JsError::new("the model is busy; stop training first"))?;
            let model = guard.as_mut().expect("checked");
            let opts = DataOptions { seq_len: seq_len.max(2), train_on_prompt: false, on_bad_line: OnBadLine::Skip };
            let data = load_dataset(&data_name, &data_text, &model.tokenizer, &opts).map_err(js_err)?;
            let (_, mut held_out) = split(data.examples, 0.2, 0);
            held_out.truncate(limit.max(1));
            let loss = crate::inspect::precision::ptq_loss(model, format, &held_out, 8, seq_len.max(2)).await.map_err(js_err)?;
            to_js(&serde_json::json!({ "loss": loss, "examples": held_out.len() })).map_err(JsValue::from)
        }))
    }
}
