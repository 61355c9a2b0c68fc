//! Choosing and initialising the compute device, and describing it to the user.
//!
//! Three kinds of device run the same code: burn's `flex` (pure-Rust CPU, also in wasm), burn's
//! `wgpu` (WebGPU in the browser; Vulkan, Metal or DX12 natively) and `cuda` behind the cargo
//! feature of that name. A wgpu device is initialised through `Device::wgpu_options()` so that
//! we keep the `WgpuSetup` handles: they describe the adapter, and our own WGSL kernels share
//! burn's device and queue through them.

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuSetup;
use serde::Serialize;

use crate::{Error, Result};

/// What the user asked for on the command line (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The fastest device that is really there: CUDA when built with it, a hardware GPU through
    /// wgpu, else the CPU. A software GPU (lavapipe, SwiftShader) loses to `flex` and is skipped.
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" | "flex" => Ok(DeviceChoice::Cpu),
            "wgpu" | "gpu" => Ok(DeviceChoice::Wgpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            other => Err(Error::input(format!(
                "unknown device '{other}': use auto, cpu, wgpu{}",
                if cfg!(feature = "cuda") { " or cuda" } else { " (or cuda, when built with --features cuda)" }
            ))),
        }
    }
}

/// The limits that decide which models and batch sizes fit on a device.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DeviceLimits {
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub shader_f16: bool,
}

impl DeviceLimits {
    /// The most bytes one tensor may take here: it lives in one buffer, bound whole.
    pub fn tensor_bytes(&self) -> u64 {
        self.max_storage_buffer_binding_size.min(self.max_buffer_size)
    }

    /// Refuse, before a step runs, a batch whose largest activations cannot live in one buffer:
    /// the logits (batch × seq × vocabulary, f32) and the attention scores (batch × heads ×
    /// seq × seq, f32). The message gives the largest batch that fits.
    pub fn check_step(&self, batch: usize, seq: usize, vocab: usize, heads: usize) -> Result<()> {
        let limit = self.tensor_bytes();
        let per_row = [("logits", seq as u64 * vocab as u64 * 4), ("attention scores", heads as u64 * seq as u64 * seq as u64 * 4)];
        for (what, row) in per_row {
            let bytes = row.saturating_mul(batch as u64);
            if bytes > limit {
                let mib = |b: u64| b as f64 / 1048576.0;
                let fits = if row > 0 { limit / row } else { 0 };
                let fix = if fits > 0 {
                    format!("use a batch size of at most {fits} (with gradient accumulation for the same effective batch) or a shorter seq len")
                } else {
                    "use a shorter seq len".to_string()
                };
                return Err(Error::input(format!(
                    "a batch of {batch} × {seq} tokens needs {:.1} MiB for its {what}, more than this GPU can bind in one \
                     buffer ({:.1} MiB): {fix}, or the CPU engine, which has no such limit",
                    mib(bytes),
                    mib(limit)
                )));
            }
        }
        Ok(())
    }
}

/// A description of the device a run uses, shown by the page and printed by the CLI.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// `wgpu`, `cpu` or `cuda`.
    pub kind: &'static str,
    /// The adapter's own name, or the CPU backend's.
    pub name: String,
    /// The graphics API under wgpu: `vulkan`, `metal`, `dx12`, `webgpu`; empty otherwise.
    pub backend: String,
    /// `discrete`, `integrated`, `virtual`, `cpu` (a software rasteriser) or `other`.
    pub device_type: String,
    pub driver: String,
    /// Present for wgpu devices only.
    pub limits: Option<DeviceLimits>,
}

impl DeviceInfo {
    pub fn cpu() -> Self {
        DeviceInfo {
            kind: "cpu",
            name: "burn flex (CPU)".into(),
            backend: String::new(),
            device_type: "cpu".into(),
            // What its matrix products run on: a BLAS found at run time, or the built-in GEMM.
            driver: crate::blas::describe(),
            limits: None,
        }
    }

    /// Read the adapter and the limits the runtime's device was created with.
    pub fn from_wgpu(setup: &WgpuSetup) -> Self {
        use burn::tensor::wgpu::wgpu;
        let info = setup.adapter.get_info();
        let limits = setup.device.limits();
        let device_type = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "cpu",
            wgpu::DeviceType::Other => "other",
        };
        DeviceInfo {
            kind: "wgpu",
            name: info.name.clone(),
            backend: format!("{:?}", setup.backend).to_lowercase(),
            device_type: device_type.into(),
            driver: [info.driver.as_str(), info.driver_info.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            limits: Some(DeviceLimits {
                max_buffer_size: limits.max_buffer_size,
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
                shader_f16: setup.device.features().contains(wgpu::Features::SHADER_F16),
            }),
        }
    }

    /// One line for a terminal or a status bar.
    pub fn summary(&self) -> String {
        match self.kind {
            "wgpu" => format!("wgpu {} on {} ({})", self.backend, self.name, self.device_type),
            _ if !self.driver.is_empty() => format!("{}; {}", self.name, self.driver),
            _ => self.name.clone(),
        }
    }
}

/// A device ready for tensors, with its description.
#[derive(Clone, Debug)]
pub struct OpenedDevice {
    pub device: Device,
    pub info: DeviceInfo,
}

/// The CPU device. Always available, natively and in wasm.
/// Whether tensors on `device` live on the CPU engine (burn flex), natively or in the page.
pub fn is_cpu(device: &Device) -> bool {
    matches!(device.as_dispatch().clone().inner(), burn::backend::DispatchDevice::Flex(_))
}

pub fn cpu() -> OpenedDevice {
    OpenedDevice { device: Device::flex(), info: DeviceInfo::cpu() }
}

/// Open a device natively. The wgpu runtime can be initialised once per process; later calls
/// reuse it.
#[cfg(not(target_arch = "wasm32"))]
pub fn open(choice: DeviceChoice) -> Result<OpenedDevice> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => open_wgpu(),
        DeviceChoice::Cuda => open_cuda(),
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = open_cuda() {
                    return Ok(d);
                }
            }
            match open_wgpu() {
                Ok(d) if d.info.device_type != "cpu" => Ok(d),
                _ => Ok(cpu()),
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn open_wgpu() -> Result<OpenedDevice> {
    use std::sync::OnceLock;
    static WGPU: OnceLock<std::result::Result<OpenedDevice, String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        Device::wgpu_options()
            .init_with_setup()
            .map(|(device, setup)| OpenedDevice { device, info: DeviceInfo::from_wgpu(&setup) })
            .map_err(|e| {
                format!(
                    "no wgpu adapter could be opened ({e}). On Linux without a GPU install Mesa's \
                     lavapipe (`apt-get install mesa-vulkan-drivers`), or use --device cpu"
                )
            })
    })
    .clone()
    .map_err(Error::device)
}

#[cfg(all(not(target_arch = "wasm32"), feature = "cuda"))]
fn open_cuda() -> Result<OpenedDevice> {
    // burn creates CUDA contexts lazily and panics when there is no driver; probe with one op.
    let device = Device::cuda(0);
    let probe = device.clone();
    std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::ones([1], &probe).into_data();
    })
    .map_err(|_| Error::device("CUDA device 0 could not be initialised: is an NVIDIA driver installed?"))?;
    Ok(OpenedDevice {
        device,
        info: DeviceInfo {
            kind: "cuda",
            name: "CUDA device 0".into(),
            backend: "cuda".into(),
            device_type: "discrete".into(),
            driver: String::new(),
            limits: None,
        },
    })
}

#[cfg(all(not(target_arch = "wasm32"), not(feature = "cuda")))]
fn open_cuda() -> Result<OpenedDevice> {
    Err(Error::device(
        "this tinytune was built without CUDA: rebuild with `cargo build --release --features cuda`",
    ))
}

/// Keep freed tensor buffers in the process heap instead of handing them back to the system.
/// The CPU engine allocates and frees buffers of megabytes many times a step; by default glibc
/// maps each one fresh (`mmap`) and unmaps it on free, so every step pays the page faults and
/// zeroing again. Measured on the 24M Llama (LoRA, batch 8 × 128, 2 threads): 545 to 580
/// tokens/s, system time 1.9 to 0.8 s, peak RSS the same (benches/README.md). Glibc only; a
/// no-op elsewhere.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Keep Mesa's Vulkan device-select layer quiet on a machine with no display. Before it lists
/// the GPUs, the layer (an implicit layer wherever Mesa's Vulkan drivers are installed, lavapipe
/// included) asks a Wayland compositor which GPU is the default, and without `XDG_RUNTIME_DIR`
/// libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment." once
/// per instance: four such lines before `tinytune check --device wgpu` on a headless server, none
/// of them ours and none of them a failure. Where no display of either kind can answer, the
/// layer has nothing to learn, so it is switched off (`NODEVICE_SELECT=1`; wgpu still picks the
/// adapter by its own preference). Left alone whenever a display is reachable or the user set
/// either of the layer's variables. Native only; call it first, before any thread starts.
#[cfg(all(target_os = "linux", not(target_arch = "wasm32")))]
pub fn quiet_vulkan_layer_without_display() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let absolute = |name: &str| std::env::var_os(name).is_some_and(|v| std::path::Path::new(&v).is_absolute());
    // libwayland needs XDG_RUNTIME_DIR unless WAYLAND_DISPLAY is a full path or a socket is handed over.
    let wayland = absolute("XDG_RUNTIME_DIR") || absolute("WAYLAND_DISPLAY") || set("WAYLAND_SOCKET");
    let chosen = set("NODEVICE_SELECT") || set("MESA_VK_DEVICE_SELECT");
    if !wayland && !set("DISPLAY") && !chosen {
        // SAFETY: called at the top of main, before any thread reads or writes the environment.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// Elsewhere there is no Mesa layer to quiet.
#[cfg(not(all(target_os = "linux", not(target_arch = "wasm32"))))]
pub fn quiet_vulkan_layer_without_display() {}

/// Peak resident memory of this process, for the last line of a run and the CPU's measured
/// memory: `getrusage`'s `ru_maxrss` (KiB on Linux, bytes on macOS), so it works on both; `None`
/// elsewhere (Windows).
#[cfg(all(unix, not(target_arch = "wasm32")))]
pub fn peak_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let max = u64::try_from(usage.ru_maxrss).ok()?;
    Some(if cfg!(target_os = "macos") { max } else { max * 1024 })
}

#[cfg(all(not(unix), not(target_arch = "wasm32")))]
pub fn peak_rss_bytes() -> Option<u64> {
    None
}

/// Resident memory of this process now (Linux).
#[cfg(not(target_arch = "wasm32"))]
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// In the page, let the worker's event loop run (so a "stop" message can arrive) between steps of
/// long work: a macrotask, since message events do not run between microtasks. The task is a
/// message through a fresh `MessageChannel`: `setTimeout(0)` would do too, but browsers hold a
/// nested timer back by at least 4 ms, which at every generated token was a fifth of the page's
/// decoding time (benches/README.md). `setTimeout` stays as the fallback. Natively there is
/// nothing to let through.
#[cfg(target_arch = "wasm32")]
pub async fn yield_now() {
    use wasm_bindgen::JsValue;
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if post_through_channel(&resolve).is_none() {
            let global = js_sys::global();
            match js_function(&global, "setTimeout") {
                Some(set_timeout) => drop(set_timeout.call2(&global, &resolve, &JsValue::from(0))),
                None => drop(resolve.call0(&JsValue::NULL)),
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// `resolve` runs when an empty message sent through a fresh `MessageChannel` arrives; `None`
/// where the global scope has no `MessageChannel`.
#[cfg(target_arch = "wasm32")]
fn post_through_channel(resolve: &js_sys::Function) -> Option<()> {
    use js_sys::Reflect;
    use wasm_bindgen::JsValue;
    let class = js_function(&js_sys::global(), "MessageChannel")?;
    let channel = Reflect::construct(&class, &js_sys::Array::new()).ok()?;
    let receiver = Reflect::get(&channel, &JsValue::from_str("port1")).ok()?;
    let sender = Reflect::get(&channel, &JsValue::from_str("port2")).ok()?;
    let post = js_function(&sender, "postMessage")?;
    Reflect::set(&receiver, &JsValue::from_str("onmessage"), resolve).ok()?;
    post.call1(&sender, &JsValue::NULL).ok().map(drop)
}

/// The function `object[name]`, if there is one.
#[cfg(target_arch = "wasm32")]
fn js_function(object: &wasm_bindgen::JsValue, name: &str) -> Option<js_sys::Function> {
    use wasm_bindgen::JsCast;
    js_sys::Reflect::get(object, &wasm_bindgen::JsValue::from_str(name)).ok()?.dyn_into().ok()
}

#[cfg(not(target_arch = "wasm32"))]
pub async fn yield_now() {}

/// Seconds on a monotonic-enough clock, natively and in the browser.
pub fn now() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() / 1000.0
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_whose_logits_cannot_be_bound_is_refused_with_the_batch_that_fits() {
        let limits = DeviceLimits { max_buffer_size: 256 << 20, max_storage_buffer_binding_size: 128 << 20, ..Default::default() };
        // SmolLM2's vocabulary: 8 × 128 × 49,152 f32 logits are 192 MiB.
        let err = limits.check_step(8, 128, 49_152, 9).unwrap_err().to_string();
        assert!(err.contains("192.0 MiB for its logits") && err.contains("(128.0 MiB)") && err.contains("at most 5"), "{err}");
        limits.check_step(5, 128, 49_152, 9).unwrap();
        // Long sequences: the attention scores.
        let err = limits.check_step(1, 8192, 512, 4).unwrap_err().to_string();
        assert!(err.contains("attention scores") && err.contains("shorter seq len"), "{err}");
    }
}
