//! The wasm-bindgen API that `www/worker.js` drives. The worker owns the module; the page only
//! sends typed messages. Library errors become a JS `Error` here, once.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::device::{self, DeviceInfo, OpenedDevice};
use crate::model::{Model, ModelFiles};
use crate::inspect::memory;
use crate::lora::LoraConfig;
use crate::lora::peft::PeftAdapter;
use crate::train::checkpoint::TrainerState;
use crate::train::batch::split;
use crate::train::data::{Example, load_dataset};
use crate::train::run::RunConfig;
use crate::train::trainer::{Method, Trainer};

mod inspect;
mod merge;
mod model;
mod train;

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
        quant_bits: crate::inspect::memory::NF4_BITS,
        kept8_bits: None,
        kept8_saved: None,
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
