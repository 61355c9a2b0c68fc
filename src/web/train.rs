//! A training run: prepare, step, resume, and the adapter's export, checkpoint and import.

use wasm_bindgen::prelude::*;

use crate::lora::peft::PeftAdapter;
use crate::train::checkpoint::{OPTIMIZER_FILE, STATE_FILE, TrainerState, checkpoint_files, parse_optimizer};
use crate::train::run::RunConfig;

use super::{Session, js_err, named_files_to_js, to_js};

#[wasm_bindgen]
impl Session {
    /// Prepare a training run: `run_toml` holds the run config (the keys of `tinytune train`),
    /// `data_name` / `data_text` the training file. Attaches a fresh LoRA adapter named
    /// "default" for the LoRA method. Resolves to `{examples, valid, skipped, total_steps, step}`.
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(&self, run_toml: &str, data_name: &str, data_text: &str) -> Result<js_sys::Promise, JsError> {
        let run = RunConfig::from_toml(run_toml).map_err(js_err)?;
        self.prepare(run, data_name, data_text, None)
    }

    /// Continue a run from checkpoint files (the names and bytes `checkpoint` gave, or a
    /// `tinytune train` checkpoint folder's files) on the same data. Resolves like
    /// `startTraining`, with `step` where it continues.
    #[wasm_bindgen(js_name = resumeTraining)]
    pub fn resume_training(&self, names: Vec<String>, files: Vec<js_sys::Uint8Array>, data_name: &str, data_text: &str) -> Result<js_sys::Promise, JsError> {
        let files: Vec<(String, Vec<u8>)> = names.into_iter().zip(files.iter().map(|f| f.to_vec())).collect();
        let get = |name: &str| {
            files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).ok_or_else(|| JsError::new(&format!("the checkpoint has no {name}")))
        };
        let state_text = String::from_utf8(get(STATE_FILE)?).map_err(|_| JsError::new("trainer_state.json is not UTF-8"))?;
        let state = TrainerState::parse(&state_text, STATE_FILE).map_err(js_err)?;
        if !state.run.method.is_adapter() {
            return Err(JsError::new("the page resumes LoRA runs only; resume full or partial runs with tinytune train --resume"));
        }
        let optimizer = parse_optimizer(&get(OPTIMIZER_FILE)?, OPTIMIZER_FILE).map_err(js_err)?;
        let config = String::from_utf8(get(crate::lora::peft::CONFIG_FILE)?).map_err(|_| JsError::new("adapter_config.json is not UTF-8"))?;
        let adapter = PeftAdapter::from_bytes(&config, &get(crate::lora::peft::WEIGHTS_FILE)?).map_err(js_err)?;
        self.prepare(state.run.clone(), data_name, data_text, Some((state, optimizer, adapter)))
    }
    /// The run stopped or finished: its adapter becomes a plain value again, so generation and
    /// task metrics record no autodiff graph. Resume tracks it again.
    #[wasm_bindgen(js_name = releaseTraining)]
    pub fn release_training(&self) -> Result<(), JsError> {
        let trainer = self.trainer.try_borrow().map_err(|_| JsError::new("a training step is running"))?;
        let Some(t) = trainer.as_ref() else { return Ok(()) };
        let mut guard = self.model.try_borrow_mut().map_err(|_| JsError::new("the model is busy"))?;
        let model = guard.as_mut().ok_or_else(|| JsError::new("no model is loaded"))?;
        t.release(model).map_err(js_err)
    }

    /// One optimizer step of the prepared run. Resolves to the step report, or null when the
    /// run is done.
    #[wasm_bindgen(js_name = trainStep)]
    pub fn train_step(&self) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let trainer = self.trainer.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut t = trainer.try_borrow_mut().map_err(|_| JsError::new("a training step is already running"))?;
            let t = t.as_mut().ok_or_else(|| JsError::new("no training run is prepared: start one first"))?;
            if t.done() {
                return Ok(JsValue::NULL);
            }
            let mut guard = model.try_borrow_mut().map_err(|_| JsError::new("the model is busy"))?;
            let report = t.step(guard.as_mut().expect("checked")).await.map_err(js_err)?;
            to_js(&report).map_err(JsValue::from)
        }))
    }

    /// Time one LoRA step of `run_toml`'s shape (rank, targets, batch size, seq len) on random
    /// tokens, before any run: resolves to `{first_seconds, seconds, tokens, batch_size, seq_len}`
    /// and leaves the model as it was. Refused once a run is prepared or an adapter is held.
    #[wasm_bindgen(js_name = measureStep)]
    pub fn measure_step(&self, run_toml: &str) -> Result<js_sys::Promise, JsError> {
        let cfg = RunConfig::from_toml(run_toml).map_err(js_err)?.train_config();
        cfg.validate().map_err(js_err)?;
        if self.trainer.try_borrow().map(|t| t.is_some()).unwrap_or(true) {
            return Err(JsError::new("a run is already prepared: its own steps say what a step costs"));
        }
        let model = self.model()?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = model.try_borrow_mut().map_err(|_| JsError::new("the model is busy"))?;
            let timing = crate::train::estimate::measure_step(guard.as_mut().expect("checked"), &cfg).await.map_err(js_err)?;
            to_js(&timing).map_err(JsValue::from)
        }))
    }
}

#[wasm_bindgen]
impl Session {
    /// The adapter named "default" (trained or imported) as PEFT files: resolves to
    /// `{config: string, weights: Uint8Array}`.
    #[wasm_bindgen(js_name = exportAdapter)]
    pub fn export_adapter(&self, base_model: String) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let lora = self.lora.borrow().clone().ok_or_else(|| JsError::new("there is no adapter yet: train one or import one first"))?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy; stop training first"))?;
            let model = guard.as_ref().expect("checked");
            let (config, weights) = crate::lora::peft::export(model, "default", &lora, &base_model).await.map_err(js_err)?;
            let out = js_sys::Object::new();
            js_sys::Reflect::set(&out, &"config".into(), &config.into())?;
            js_sys::Reflect::set(&out, &"weights".into(), &js_sys::Uint8Array::from(weights.as_slice()).into())?;
            Ok(out.into())
        }))
    }

    /// A checkpoint of the current run: resolves to `{names, files}` (trainer_state.json,
    /// optimizer.safetensors and the adapter's PEFT files).
    pub fn checkpoint(&self) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let trainer = self.trainer.clone();
        let run = self.run.borrow().clone().ok_or_else(|| JsError::new("nothing is training: start a run first"))?;
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let t = trainer.try_borrow().map_err(|_| JsError::new("a training step is running"))?;
            let t = t.as_ref().ok_or_else(|| JsError::new("nothing is training: start a run first"))?;
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy"))?;
            let files = checkpoint_files(guard.as_ref().expect("checked"), t, &run, None).await.map_err(js_err)?;
            named_files_to_js(files)
        }))
    }

    /// Load PEFT adapter files as the adapter "default" (replacing any), for inspecting,
    /// comparing and exporting. Resolves to `{layers, r, alpha}`.
    #[wasm_bindgen(js_name = importAdapter)]
    pub fn import_adapter(&self, config_json: &str, weights: Vec<u8>) -> Result<JsValue, JsError> {
        let adapter = PeftAdapter::from_bytes(config_json, &weights).map_err(js_err)?;
        let lora = adapter.config.lora_config().map_err(js_err)?;
        let mut guard = self.model.try_borrow_mut().map_err(|_| JsError::new("the model is busy; stop training first"))?;
        let model = guard.as_mut().ok_or_else(|| JsError::new("no model is loaded yet: load one first"))?;
        *self.trainer.borrow_mut() = None;
        // Check it against the model first: a bad adapter changes nothing.
        adapter.load_into(model, "import-check").map_err(js_err)?;
        crate::lora::remove(model, "import-check");
        // The previous adapter goes (a PiSSA one gives the base back its top directions).
        crate::lora::remove(model, "default");
        let layers = adapter.load_into(model, "default").map_err(js_err)?;
        *self.lora.borrow_mut() = Some(lora.clone());
        to_js(&serde_json::json!({ "layers": layers, "r": lora.r, "alpha": lora.alpha }))
    }

    /// Turn the adapter "default" on or off (base vs adapter comparisons).
    #[wasm_bindgen(js_name = setAdapterEnabled)]
    pub fn set_adapter_enabled(&self, on: bool) -> Result<(), JsError> {
        let mut guard = self.model.try_borrow_mut().map_err(|_| JsError::new("the model is busy; stop training first"))?;
        let model = guard.as_mut().ok_or_else(|| JsError::new("no model is loaded yet: load one first"))?;
        crate::lora::set_active(model, if on { &["default"] } else { &[] });
        Ok(())
    }
}
