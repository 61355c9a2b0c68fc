//! The wasm-bindgen API that `www/worker.js` drives. The worker owns the module; the page only
//! sends typed messages. Library errors become a JS `Error` here, once.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::device::{self, DeviceInfo, OpenedDevice};
use crate::generate::Sampling;
use crate::model::{Model, ModelFiles};
use crate::inspect::memory::{self, ModelShape, RunShape};
use crate::lora::LoraConfig;
use crate::lora::peft::PeftAdapter;
use crate::tasks::Task;
use crate::train::checkpoint::{OPTIMIZER_FILE, STATE_FILE, TrainerState, checkpoint_files, parse_optimizer};
use crate::train::data::{DataOptions, Example, OnBadLine, load_dataset, split};
use crate::train::run::RunConfig;
use crate::train::trainer::{Method, Trainer};

unsafe extern "C" {
    /// The module's static constructors, synthesized by the wasm linker (cubecl's IR registers
    /// its operations through `inventory`, which runs them).
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
pub fn start() {
    // Run the constructors once, here. When no export calls them, the linker takes the module
    // for a run-once "command" and calls them at the top of *every* export, wasm-bindgen's
    // helpers included; every value that crossed between JavaScript and the module then paid
    // for 120 constructor calls, about 0.7 ms each time, which made the page's decoding 20 ms
    // a token (benches/README.md). Calling them from this export makes it a library module.
    // SAFETY: called once, first (wasm-bindgen runs the start function right after
    // instantiation); the constructors only register statics.
    unsafe { __wasm_call_ctors() };
    console_error_panic_hook::set_once();
}

thread_local! {
    // burn's wgpu runtime can be initialised once per worker; keep what we got.
    static WEBGPU: RefCell<Option<OpenedDevice>> = const { RefCell::new(None) };
    // The WebGPU device under burn's runtime, for its loss signal.
    static GPU_DEVICE: RefCell<Option<burn::tensor::wgpu::wgpu::Device>> = const { RefCell::new(None) };
    // Called with (reason, message) when the browser reports the device lost.
    static ON_DEVICE_LOST: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
}

/// The memory calculator (`tinytune memory`): the ledger's formula for a config.json's text or a
/// preset name (gpt2-124m, llama-3-8b, llama-2-65b), full vs LoRA vs QLoRA at this batch,
/// sequence length, rank and targets (AdamW). Returns `{params, rows, formula, assumptions}`.
#[wasm_bindgen(js_name = memoryCalculator)]
pub fn memory_calculator(config: &str, batch: usize, seq: usize, rank: usize, targets: &str, bf16_activations: bool, checkpointing: bool) -> Result<JsValue, JsError> {
    use crate::inspect::calculator;
    let text = calculator::config_text(config).unwrap_or(config);
    let cfg = crate::model::ModelConfig::from_json(text).map_err(js_err)?;
    if batch == 0 || seq == 0 || rank == 0 {
        return Err(JsError::new("batch, sequence length and rank must each be at least 1"));
    }
    let run = crate::inspect::memory::RunShape {
        method: Method::Lora,
        rank,
        targets: crate::lora::Targets::parse(targets),
        partial_layers: 1,
        optimizer: crate::train::trainer::Optimizer::Adamw,
        batch,
        seq,
        nf4: false,
    };
    let a = calculator::Assumptions { bf16_activations, checkpointing };
    let rows = calculator::table(&cfg, &run, a).map_err(js_err)?;
    to_js(&serde_json::json!({
        "params": calculator::shape_of(&cfg).params,
        "rows": rows,
        "formula": calculator::formula(a),
        "assumptions": a,
    }))
}

/// Call `callback(reason, message)` when the WebGPU device is lost: the browser's own signal
/// (`GPUDevice.lost`, through wgpu), not a guess from error text. `reason` is `Destroyed` or
/// `Unknown` (a driver reset, the tab's GPU process gone, too much memory asked for).
#[wasm_bindgen(js_name = onDeviceLost)]
pub fn on_device_lost(callback: js_sys::Function) {
    ON_DEVICE_LOST.with(|f| *f.borrow_mut() = Some(callback));
}

/// Destroy the WebGPU device, as a driver reset would take it away: the browser then reports it
/// lost through the same signal. Returns false when no WebGPU device is open. (The page's tests
/// cause a real loss with it.)
#[wasm_bindgen(js_name = loseDevice)]
pub fn lose_device() -> bool {
    GPU_DEVICE.with(|d| d.borrow().as_ref().map(|d| d.destroy()).is_some())
}

fn device_lost(reason: burn::tensor::wgpu::wgpu::DeviceLostReason, message: String) {
    ON_DEVICE_LOST.with(|f| {
        if let Some(f) = f.borrow().as_ref() {
            let _ = f.call2(&JsValue::NULL, &JsValue::from_str(&format!("{reason:?}")), &JsValue::from_str(&message));
        }
    });
}

/// Named files as `{names: [..], files: [Uint8Array, ..]}` for the page.
fn named_files_to_js(files: Vec<(String, Vec<u8>)>) -> Result<JsValue, JsValue> {
    let names = js_sys::Array::new();
    let bytes = js_sys::Array::new();
    for (n, b) in files {
        names.push(&JsValue::from_str(&n));
        bytes.push(&js_sys::Uint8Array::from(b.as_slice()).into());
    }
    let out = js_sys::Object::new();
    js_sys::Reflect::set(&out, &"names".into(), &names)?;
    js_sys::Reflect::set(&out, &"files".into(), &bytes)?;
    Ok(out.into())
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&format!("could not pass a result to the page: {e}")))
}

/// A large, numeric result (heatmaps, histograms) for the page, through JSON: serde-wasm-bindgen
/// builds such arrays one JS value at a time, which took 5 to 7 s for one 96 × 96 heatmap and its
/// factors in Chromium's worker; JSON.parse of the same text takes milliseconds. JSON has no NaN
/// or infinity: those arrive as null.
fn to_js_json<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    let text = serde_json::to_string(value).map_err(|e| JsError::new(&format!("could not pass a result to the page: {e}")))?;
    js_sys::JSON::parse(&text).map_err(|_| JsError::new("could not pass a result to the page: its JSON did not parse"))
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
    /// The held-out examples of the current run.
    valid: Rc<RefCell<Vec<Example>>>,
    /// The LoRA settings of the adapter named "default" (trained here or imported).
    lora: Rc<RefCell<Option<LoraConfig>>>,
    /// The files the model was loaded from: a QLoRA run stores the base in 4 bits, and a later
    /// run that needs the f32 base reloads it from these.
    files: Rc<RefCell<Option<Rc<ModelFiles>>>>,
    /// Bytes the device's allocator held once the run's base was ready (the measured base).
    base_in_use: Rc<RefCell<Option<u64>>>,
}

/// What the engine's 32-bit address space can give to model files and weights, leaving room
/// for activations, the module and the allocator.
const WASM_MEMORY_BUDGET: u64 = 3 << 30;

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
        // The callback holds nothing (wgpu asks for a Send one); it finds the page's listener
        // in this worker's thread-local.
        setup.device.set_device_lost_callback(device_lost);
        GPU_DEVICE.with(|d| *d.borrow_mut() = Some(setup.device.clone()));
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

#[wasm_bindgen]
impl Session {
    /// The 4-bit kernels on this device against the CPU path: resolves to `{cases, equal,
    /// fused_max_rel_diff}` (see `check::q4`).
    #[wasm_bindgen(js_name = q4Check)]
    pub fn q4_check(&self) -> js_sys::Promise {
        let device = self.opened.device.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let result = crate::check::q4(&device).await.map_err(js_err)?;
            to_js(&result).map_err(JsValue::from)
        })
    }
}

impl Session {
    fn on(opened: OpenedDevice) -> Session {
        Session {
            opened,
            model: Rc::new(RefCell::new(None)),
            trainer: Rc::new(RefCell::new(None)),
            run: Rc::new(RefCell::new(None)),
            valid: Rc::new(RefCell::new(Vec::new())),
            lora: Rc::new(RefCell::new(None)),
            files: Rc::new(RefCell::new(None)),
            base_in_use: Rc::new(RefCell::new(None)),
        }
    }

    /// Load the data, attach (or restore) the adapter and make the trainer.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        run: RunConfig,
        data_name: &str,
        data_text: &str,
        resume: Option<(TrainerState, Vec<(String, Vec<f32>, [usize; 2])>, PeftAdapter)>,
    ) -> Result<js_sys::Promise, JsError> {
        let cfg = run.train_config();
        cfg.validate().map_err(js_err)?;
        let model = self.model()?;
        if let (Some(limits), Ok(m)) = (&self.opened.info.limits, model.try_borrow()) {
            if let Some(m) = m.as_ref() {
                limits.check_step(cfg.batch_size, cfg.seq_len, m.config.vocab_size(), m.config.heads()).map_err(js_err)?;
            }
        }
        let (trainer_slot, valid_slot, lora_slot) = (self.trainer.clone(), self.valid.clone(), self.lora.clone());
        let (files, base_in_use, device) = (self.files.borrow().clone(), self.base_in_use.clone(), self.opened.device.clone());
        // A full or partial run changed the weights themselves: the next run starts from the
        // model as loaded, not from what that run left.
        let weights_changed = self.run.borrow().as_ref().is_some_and(|r| !r.method.is_adapter());
        *self.run.borrow_mut() = Some(run.clone());
        let (name, text) = (data_name.to_string(), data_text.to_string());
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = model.try_borrow_mut().map_err(|_| JsError::new("the model is busy"))?;
            // A base a QLoRA run stored in 4 bits comes back in f32 for the methods that want it.
            let requantized = guard.as_ref().is_some_and(|m| m.quantization().is_some());
            if (requantized && cfg.method != Method::Qlora) || weights_changed {
                if let Some(files) = files.as_ref().filter(|f| !f.is_quantized()) {
                    *guard = None;
                    *guard = Some(Model::load(files, &device.clone().autodiff()).map_err(js_err)?);
                }
            }
            let model = guard.as_mut().expect("checked");
            let data = load_dataset(&name, &text, &model.tokenizer, &run.data_options()).map_err(js_err)?;
            let skipped = data.skipped.iter().map(|b| b.to_string()).collect::<Vec<_>>();
            let (train, valid) = if run.valid_fraction > 0.0 { split(data.examples, run.valid_fraction, cfg.seed) } else { (data.examples, vec![]) };
            // A new run replaces any adapter a previous run (or an import) left.
            crate::lora::remove(model, "default");
            *trainer_slot.borrow_mut() = None;
            let note = crate::train::trainer::prepare_base(model, &cfg).await.map_err(js_err)?;
            *base_in_use.borrow_mut() = memory::measure(&device).and_then(|m| m.in_use);
            match (&resume, cfg.method.is_adapter()) {
                (Some((_, _, adapter)), _) => {
                    crate::train::checkpoint::restore_adapter(model, &cfg, adapter).await.map_err(js_err)?;
                }
                (None, true) => {
                    crate::lora::attach(model, "default", &cfg.lora, cfg.seed).await.map_err(js_err)?;
                }
                _ => {}
            }
            *lora_slot.borrow_mut() = cfg.method.is_adapter().then(|| cfg.lora.clone());
            let examples = train.len();
            let mut trainer = Trainer::new(model, cfg, train).map_err(js_err)?;
            if let Some((state, optimizer, _)) = resume {
                trainer.restore(model, state.cursor, optimizer).map_err(js_err)?;
            }
            let (total_steps, step) = (trainer.total_steps, trainer.cursor.step);
            let n_valid = valid.len();
            *valid_slot.borrow_mut() = valid;
            *trainer_slot.borrow_mut() = Some(trainer);
            let summary = model.summary.clone();
            to_js(&serde_json::json!({ "examples": examples, "valid": n_valid, "skipped": skipped, "total_steps": total_steps, "step": step, "note": note, "model": summary }))
                .map_err(JsValue::from)
        }))
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
            let (loss, _) = crate::train::trainer::evaluate_examples(model, &held_out, 8, seq_len.max(2)).await.map_err(js_err)?;
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

pub use crate::device::yield_now;
