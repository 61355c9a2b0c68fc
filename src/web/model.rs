//! The loaded model: loading its files, tokenizing, loss, logits and generation.

use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::generate::Sampling;
use crate::model::{Model, ModelFiles};

use super::{Session, js_err, to_js};

/// What the engine's 32-bit address space can give to model files and weights, leaving room
/// for activations, the module and the allocator.
const WASM_MEMORY_BUDGET: u64 = 3 << 30;

#[wasm_bindgen]
impl Session {
    /// Load a model from its files: `names[i]` is the file name of `files[i]` (config.json,
    /// *.safetensors, tokenizer.json, ...). Resolves to the model summary.
    ///
    /// Everything that can be known from the headers is checked before the previous model is
    /// let go: the config, every tensor against the device's buffer limit, and the loaded size
    /// against `budget_mib` (the page's memory setting) and the engine's address space. A model
    /// refused there leaves the previous one loaded.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, names: Vec<String>, files: Vec<js_sys::Uint8Array>, budget_mib: Option<f64>) -> Result<JsValue, JsError> {
        if names.len() != files.len() {
            return Err(JsError::new("loadModel: names and files differ in length"));
        }
        // The files themselves are copied into the engine's memory, so count them before that.
        let file_bytes: u64 = files.iter().map(|f| f.length() as u64).sum();
        if file_bytes > WASM_MEMORY_BUDGET {
            return Err(JsError::new(&format!(
                "these model files hold {:.0} MiB; the page's engine (32-bit WebAssembly) can hold at most about {:.0} MiB. Use a smaller or 4-bit model",
                file_bytes as f64 / 1048576.0,
                WASM_MEMORY_BUDGET as f64 / 1048576.0
            )));
        }
        let named = names.into_iter().zip(files.iter().map(|f| f.to_vec())).collect();
        let files = ModelFiles::from_named(named).map_err(js_err)?;
        crate::model::ModelConfig::from_json(&files.config).map_err(js_err)?;
        if let Some(limits) = &self.opened.info.limits {
            files.check_fits(limits).map_err(js_err)?;
        }
        if let Some(mib) = budget_mib.filter(|m| m.is_finite() && *m > 0.0) {
            files.check_memory((mib * 1048576.0) as u64, "this page was told the device has (the memory setting)").map_err(js_err)?;
        }
        if self.opened.info.limits.is_none() {
            // On the CPU engine the weights live in wasm memory beside the files.
            files
                .check_memory(WASM_MEMORY_BUDGET.saturating_sub(file_bytes), "left in the CPU engine's 4 GiB address space once the files are in it")
                .map_err(js_err)?;
        }
        let mut slot = self.model.try_borrow_mut().map_err(|_| JsError::new("the model is busy; stop training first"))?;
        *slot = None; // free the old model's device memory first
        *self.trainer.borrow_mut() = None;
        // On an autodiff device, so the same model can be trained; inference just records nothing.
        let model = Model::load(&files, &self.opened.device.clone().autodiff()).map_err(js_err)?;
        let summary = to_js(&model.summary)?;
        *slot = Some(model);
        *self.files.borrow_mut() = Some(Rc::new(files));
        Ok(summary)
    }

    /// Whether a model is loaded (a refused load leaves the previous one).
    #[wasm_bindgen(js_name = hasModel)]
    pub fn has_model(&self) -> bool {
        self.model.try_borrow().map(|m| m.is_some()).unwrap_or(true)
    }

    /// Token ids of `text`, with special tokens as the tokenizer adds them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        let m = self.model()?;
        let m = m.borrow();
        m.as_ref().expect("checked").tokenizer.encode(text, true).map_err(js_err)
    }

    /// The prompt ids of `text` as a user message under the model's chat template, ending where
    /// the assistant's answer starts.
    #[wasm_bindgen(js_name = encodeChat)]
    pub fn encode_chat(&self, text: &str) -> Result<Vec<u32>, JsError> {
        let m = self.model()?;
        let m = m.borrow();
        crate::generate::chat_prompt(m.as_ref().expect("checked"), text).map_err(js_err)
    }

    /// Evaluation loss over text records (see `tinytune eval`).
    #[wasm_bindgen(js_name = evalLoss)]
    pub fn eval_loss(&self, texts: Vec<String>, seq_len: usize) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.borrow();
            let model = guard.as_ref().expect("checked");
            let report = crate::eval::eval_loss(model, &texts, seq_len, |_, _| {}).await.map_err(js_err)?;
            to_js(&report).map_err(JsValue::from)
        }))
    }

    /// Logits `[T, V]` of a token sequence, flattened.
    pub fn logits(&self, ids: Vec<u32>) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.borrow();
            let model = guard.as_ref().expect("checked");
            model.check_ids(&ids).map_err(js_err)?;
            let logits = model.forward(model.ids(&[ids]), None, None);
            let values = crate::model::read_f32(logits).await.map_err(js_err)?;
            Ok(js_sys::Float32Array::from(values.as_slice()).into())
        }))
    }

    /// Generate after `prompt_ids`. `sampling` is `{max_new_tokens, temperature, top_k, top_p,
    /// seed, stop_at_eos}`; `on_token(id, text)` is called per token and may return false to stop.
    /// Resolves to `{ids, stop}`.
    pub fn generate(&self, prompt_ids: Vec<u32>, sampling: JsValue, on_token: js_sys::Function) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let sampling: Sampling = serde_wasm_bindgen::from_value(sampling)
            .map_err(|e| JsError::new(&format!("bad sampling settings: {e}")))?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.borrow();
            let model = guard.as_ref().expect("checked");
            let (ids, stop) = crate::generate::generate(model, &prompt_ids, &sampling, |id, text| {
                let go = on_token.call2(&JsValue::NULL, &JsValue::from(id), &JsValue::from_str(text));
                !matches!(go, Ok(v) if v == JsValue::FALSE)
            })
            .await
            .map_err(js_err)?;
            to_js(&serde_json::json!({ "ids": ids, "stop": stop })).map_err(JsValue::from)
        }))
    }
}
