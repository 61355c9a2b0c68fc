//! Adapters combined and merged, the serving bench, and the merged model's files.

use wasm_bindgen::prelude::*;

use crate::lora::peft::PeftAdapter;
use crate::train::batch::split;
use crate::train::data::{DataOptions, OnBadLine, load_dataset};

use super::{Session, js_err, named_files_to_js, to_js, to_js_json};

#[wasm_bindgen]
impl Session {
    /// Combine PEFT adapters into one, as PEFT's `add_weighted_adapter` does: `configs[i]` and
    /// `weights[i]` are adapter i's files, `options` the combination (`merge::CombineOptions` as
    /// JSON), `trace` a module path whose method trace comes back shrunk to `max_side` a side.
    /// Resolves to `{config, weights, rank, modules, trace}`; the merged adapter is not attached.
    #[wasm_bindgen(js_name = mergeAdapters)]
    pub fn merge_adapters(&self, configs: Vec<String>, weights: Vec<js_sys::Uint8Array>, options: JsValue, trace: String, max_side: usize) -> Result<JsValue, JsError> {
        use crate::inspect::spectrum::block_mean;
        let opts: crate::merge::CombineOptions =
            serde_wasm_bindgen::from_value(options).map_err(|e| JsError::new(&format!("bad merge settings: {e}")))?;
        let adapters = configs
            .iter()
            .zip(weights.iter())
            .map(|(c, w)| PeftAdapter::from_bytes(c, &w.to_vec()))
            .collect::<crate::Result<Vec<_>>>()
            .map_err(js_err)?;
        // Every adapter must fit the loaded model, or the merge is for another base.
        {
            let m = self.model()?;
            let mut guard = m.try_borrow_mut().map_err(|_| JsError::new("the model is busy; stop training first"))?;
            let model = guard.as_mut().expect("checked");
            for (i, a) in adapters.iter().enumerate() {
                a.load_into(model, "merge-check").map_err(|e| JsError::new(&format!("adapter {}: {e}", i + 1)))?;
                crate::lora::remove(model, "merge-check");
            }
        }
        let refs: Vec<&PeftAdapter> = adapters.iter().collect();
        let trace_path = (!trace.is_empty()).then_some(trace.as_str());
        let (merged, t) = crate::merge::combine(&refs, &opts, trace_path).map_err(js_err)?;
        let (config, bytes) = merged.to_files().map_err(js_err)?;
        let side = max_side.max(1);
        let shrink = |v: &Option<Vec<f32>>, rows: usize, cols: usize| v.as_ref().map(|x| block_mean(x, rows, cols, side, side));
        let trace = t.map(|t| {
            serde_json::json!({
                "space": t.space,
                "rows": t.rows,
                "cols": t.cols,
                "adapters": adapters.len(),
                "elected": shrink(&t.elected, t.rows, t.cols),
                "conflicts": shrink(&t.conflicts, t.rows, t.cols),
                "kept": shrink(&t.kept, t.rows, t.cols),
                "singular_values": t.singular_values,
                "cut": t.cut,
            })
        });
        let out = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&out, &k.into(), v).map(|_| ()).map_err(|_| JsError::new("could not pass the merge to the page"));
        set("config", &config.into())?;
        set("weights", &js_sys::Uint8Array::from(bytes.as_slice()).into())?;
        set("rank", &JsValue::from(merged.config.r as u32))?;
        let modules = js_sys::Array::new();
        for p in merged.modules.keys() {
            modules.push(&JsValue::from_str(p));
        }
        set("modules", &modules)?;
        set("trace", &to_js_json(&trace)?)?;
        Ok(out.into())
    }

    /// Serving, measured on this device: the loaded model's files, the adapters given (names,
    /// configs, weights), the prompts, served merged, separate, as one multi-LoRA batch and
    /// swapping (see `serving::measure`). `on_progress(mode)` is called as each mode starts.
    /// Resolves to one report per mode.
    #[wasm_bindgen(js_name = serveBench)]
    pub fn serve_bench(&self, names: Vec<String>, configs: Vec<String>, weights: Vec<js_sys::Uint8Array>, prompts: Vec<String>, max_new_tokens: usize, on_progress: js_sys::Function) -> Result<js_sys::Promise, JsError> {
        let files = self.files.borrow().clone().ok_or_else(|| JsError::new("no model is loaded yet: load one first"))?;
        let adapters: Vec<crate::serving::AdapterFiles> = names
            .into_iter()
            .zip(configs)
            .zip(weights.iter())
            .map(|((name, config), w)| crate::serving::AdapterFiles { name, config, weights: w.to_vec() })
            .collect();
        let device = self.opened.device.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let reports = crate::serving::measure(&files, &device, &adapters, &prompts, max_new_tokens, |m| {
                let _ = on_progress.call1(&JsValue::NULL, &JsValue::from_str(m));
            })
            .await
            .map_err(js_err)?;
            to_js(&reports).map_err(JsValue::from)
        }))
    }

    /// The loss of the model as it is (its enabled adapters included) on the held-out fifth of a
    /// data file (at most `limit` examples), scored as validation is. Resolves to `{loss, examples}`.
    #[wasm_bindgen(js_name = heldOutLoss)]
    pub fn held_out_loss(&self, data_name: String, data_text: String, seq_len: usize, limit: usize) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy"))?;
            let model = guard.as_ref().expect("checked");
            let opts = DataOptions { seq_len: seq_len.max(2), train_on_prompt: false, on_bad_line: OnBadLine::Skip };
            let data = load_dataset(&data_name, &data_text, &model.tokenizer, &opts).map_err(js_err)?;
            let (_, mut held_out) = split(data.examples, 0.2, 0);
            held_out.truncate(limit.max(1));
            let (loss, _) = crate::train::loss::evaluate_examples(model, &held_out, 8, seq_len.max(2)).await.map_err(js_err)?;
            to_js(&serde_json::json!({ "loss": loss, "examples": held_out.len() })).map_err(JsValue::from)
        }))
    }

    /// The model with the adapter "default" merged into its weights, as a Hugging Face folder's
    /// files (`{names, files}`). The loaded model keeps the adapter separate afterwards.
    #[wasm_bindgen(js_name = mergedModelFiles)]
    pub fn merged_model_files(&self) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = model.try_borrow_mut().map_err(|_| JsError::new("the model is busy; stop training first"))?;
            let model = guard.as_mut().expect("checked");
            let kept: Vec<(String, crate::lora::LoraAdapter)> = model
                .arch
                .linears()
                .iter()
                .filter_map(|(p, l)| l.adapter("default").map(|a| (p.clone(), a.clone())))
                .collect();
            if kept.is_empty() {
                return Err(JsError::new("there is no adapter to merge: train, import or merge one first").into());
            }
            crate::merge::into_base(model, "default").await.map_err(js_err)?;
            let files = model.save_files().await;
            // Back to base + separate adapter, as before.
            crate::merge::out_of_base(model, &kept).await.map_err(js_err)?;
            let mut by_path: std::collections::HashMap<String, crate::lora::LoraAdapter> = kept.into_iter().collect();
            for (p, l) in model.arch.linears_mut() {
                if let Some(a) = by_path.remove(&p) {
                    l.adapters.push(a);
                }
            }
            let files = files.map_err(js_err)?;
            named_files_to_js(files)
        }))
    }
}
