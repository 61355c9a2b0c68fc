//! The wasm-bindgen API that `www/worker.js` drives. The worker owns the module; the page only
//! sends typed messages. Library errors become a JS `Error` here, once.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::device::{self, DeviceInfo, OpenedDevice};
use crate::generate::Sampling;
use crate::model::{Model, ModelFiles};
use crate::train::data::{DataOptions, OnBadLine, load_dataset, split};
use crate::train::run::RunConfig;
use crate::train::trainer::{Method, Trainer};

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

thread_local! {
    // burn's wgpu runtime can be initialised once per worker; keep what we got.
    static WEBGPU: RefCell<Option<OpenedDevice>> = const { RefCell::new(None) };
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&format!("could not pass a result to the page: {e}")))
}

fn js_err(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A compute device and everything the page runs on it.
#[wasm_bindgen]
pub struct Session {
    opened: OpenedDevice,
    model: Rc<RefCell<Option<Model>>>,
    trainer: Rc<RefCell<Option<Trainer>>>,
    /// The run config of the last training run, for exporting its adapter.
    run: Rc<RefCell<Option<RunConfig>>>,
}

#[wasm_bindgen]
impl Session {
    /// Open a session on the browser's WebGPU through burn's wgpu runtime.
    #[wasm_bindgen(js_name = openWebGpu)]
    pub async fn open_webgpu() -> Result<Session, JsError> {
        if let Some(opened) = WEBGPU.with(|w| w.borrow().clone()) {
            return Ok(Session::on(opened));
        }
        let (device, setup) = burn::tensor::Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map_err(|e| JsError::new(&format!("WebGPU could not be initialised: {e}")))?;
        let opened = OpenedDevice { device, info: DeviceInfo::from_wgpu(&setup) };
        WEBGPU.with(|w| *w.borrow_mut() = Some(opened.clone()));
        Ok(Session::on(opened))
    }

    /// Open a session on the CPU (burn `flex`, compiled into the wasm module).
    #[wasm_bindgen(js_name = openCpu)]
    pub fn open_cpu() -> Session {
        Session::on(device::cpu())
    }

    /// The device's description: kind, adapter name, backend, limits.
    #[wasm_bindgen(js_name = deviceInfo)]
    pub fn device_info(&self) -> Result<JsValue, JsError> {
        to_js(&self.opened.info)
    }

    /// Run the device check (forward + backward through a matmul chain). Resolves to
    /// `{loss, grad_w1, grad_w2}`.
    #[wasm_bindgen(js_name = runCheck)]
    pub fn run_check(&self) -> js_sys::Promise {
        let device = self.opened.device.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let result = crate::check::run(&device).await.map_err(js_err)?;
            to_js(&result).map_err(JsValue::from)
        })
    }
}

impl Session {
    fn on(opened: OpenedDevice) -> Session {
        Session { opened, model: Rc::new(RefCell::new(None)), trainer: Rc::new(RefCell::new(None)), run: Rc::new(RefCell::new(None)) }
    }

    /// The loaded model, shared with async work; fails while another command holds it mutably.
    fn model(&self) -> Result<Rc<RefCell<Option<Model>>>, JsError> {
        match self.model.try_borrow() {
            Ok(m) if m.is_some() => Ok(self.model.clone()),
            Ok(_) => Err(JsError::new("no model is loaded yet: load one first")),
            Err(_) => Err(JsError::new("the model is busy (training step in progress)")),
        }
    }
}

#[wasm_bindgen]
impl Session {
    /// Load a model from its files: `names[i]` is the file name of `files[i]` (config.json,
    /// *.safetensors, tokenizer.json, ...). Resolves to the model summary.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, names: Vec<String>, files: Vec<js_sys::Uint8Array>) -> Result<JsValue, JsError> {
        if names.len() != files.len() {
            return Err(JsError::new("loadModel: names and files differ in length"));
        }
        let named = names.into_iter().zip(files.iter().map(|f| f.to_vec())).collect();
        let files = ModelFiles::from_named(named).map_err(js_err)?;
        if let Some(limits) = &self.opened.info.limits {
            files.check_fits(limits).map_err(js_err)?;
        }
        let mut slot = self.model.try_borrow_mut().map_err(|_| JsError::new("the model is busy; stop training first"))?;
        *slot = None; // free the old model's device memory first
        *self.trainer.borrow_mut() = None;
        // On an autodiff device, so the same model can be trained; inference just records nothing.
        let model = Model::load(&files, &self.opened.device.clone().autodiff()).map_err(js_err)?;
        let summary = to_js(&model.summary)?;
        *slot = Some(model);
        Ok(summary)
    }

    /// Token ids of `text`, with special tokens as the tokenizer adds them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        let m = self.model()?;
        let m = m.borrow();
        m.as_ref().expect("checked").tokenizer.encode(text, true).map_err(js_err)
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

#[wasm_bindgen]
impl Session {
    /// Prepare a training run: `run_toml` holds the run config (the keys of `tinytune train`),
    /// `data_name` / `data_text` the training file. Attaches a fresh LoRA adapter named
    /// "default" for the LoRA method. Resolves to `{examples, valid, skipped, total_steps}`.
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(&self, run_toml: &str, data_name: &str, data_text: &str) -> Result<js_sys::Promise, JsError> {
        let run = RunConfig::from_toml(run_toml).map_err(js_err)?;
        let cfg = run.train_config();
        cfg.validate().map_err(js_err)?;
        let model = self.model()?;
        let trainer_slot = self.trainer.clone();
        *self.run.borrow_mut() = Some(run.clone());
        let (name, text) = (data_name.to_string(), data_text.to_string());
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = model.try_borrow_mut().map_err(|_| JsError::new("the model is busy"))?;
            let model = guard.as_mut().expect("checked");
            let opts = DataOptions {
                seq_len: cfg.seq_len,
                train_on_prompt: run.train_on_prompt,
                on_bad_line: if run.skip_bad_lines { OnBadLine::Skip } else { OnBadLine::Stop },
            };
            let data = load_dataset(&name, &text, &model.tokenizer, &opts).map_err(js_err)?;
            let skipped = data.skipped.iter().map(|b| b.to_string()).collect::<Vec<_>>();
            let (train, valid) = if run.valid_fraction > 0.0 { split(data.examples, run.valid_fraction, cfg.seed) } else { (data.examples, vec![]) };
            // A new run replaces any adapter a previous run left.
            for (_, l) in model.arch.linears_mut() {
                l.adapters.retain(|a| a.name != "default");
            }
            if cfg.method == Method::Lora {
                crate::lora::attach(model, "default", &cfg.lora, cfg.seed).await.map_err(js_err)?;
            }
            let examples = train.len();
            let trainer = Trainer::new(model, cfg, train).map_err(js_err)?;
            let total_steps = trainer.total_steps;
            *trainer_slot.borrow_mut() = Some(trainer);
            to_js(&serde_json::json!({ "examples": examples, "valid": valid.len(), "skipped": skipped, "total_steps": total_steps }))
                .map_err(JsValue::from)
        }))
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
}

#[wasm_bindgen]
impl Session {
    /// The trained LoRA adapter as PEFT files: resolves to `{config: string, weights: Uint8Array}`.
    #[wasm_bindgen(js_name = exportAdapter)]
    pub fn export_adapter(&self, base_model: String) -> Result<js_sys::Promise, JsError> {
        let model = self.model()?;
        let run = self.run.borrow().clone().ok_or_else(|| JsError::new("nothing has been trained yet: train first"))?;
        if run.method != Method::Lora {
            return Err(JsError::new("only LoRA runs produce an adapter"));
        }
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let guard = model.try_borrow().map_err(|_| JsError::new("the model is busy; stop training first"))?;
            let model = guard.as_ref().expect("checked");
            let (config, weights) = crate::lora::peft::export(model, "default", &run.train_config().lora, &base_model).await.map_err(js_err)?;
            let out = js_sys::Object::new();
            js_sys::Reflect::set(&out, &"config".into(), &config.into())?;
            js_sys::Reflect::set(&out, &"weights".into(), &js_sys::Uint8Array::from(weights.as_slice()).into())?;
            Ok(out.into())
        }))
    }
}

/// The check computed by hand in f64, for the page to show beside the devices' results.
#[wasm_bindgen(js_name = referenceCheck)]
pub fn reference_check() -> Result<JsValue, JsError> {
    to_js(&crate::check::reference())
}

/// The crate version, shown in the page footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Let the worker's event loop run (so a "stop" message can arrive) between generation steps.
/// A macrotask (setTimeout 0), since message events do not run between microtasks.
pub async fn yield_now() {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        if let Ok(set_timeout) = js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout")) {
            let set_timeout: js_sys::Function = set_timeout.unchecked_into();
            let _ = set_timeout.call2(&global, &resolve, &JsValue::from(0));
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
