//! Numeric tests that every device must pass. `scripts/test` runs this binary twice: on burn
//! `flex` (the default) and with TINYTUNE_TEST_DEVICE=wgpu on native wgpu (Mesa lavapipe on a
//! machine without a GPU). A requested device that cannot be opened fails; nothing is skipped.

mod device_check;
mod fused_ops;
mod hf_parity;
mod peft_parity;
mod quant_parity;
mod serving;
mod train_parity;

use tinytune::device::{self, DeviceChoice, OpenedDevice};

pub fn device_under_test() -> OpenedDevice {
    let wanted = std::env::var("TINYTUNE_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let choice: DeviceChoice = wanted.parse().expect("TINYTUNE_TEST_DEVICE must be cpu, wgpu or cuda");
    let opened = device::open(choice).unwrap_or_else(|e| panic!("TINYTUNE_TEST_DEVICE={wanted}: {e}"));
    eprintln!("device under test: {}", opened.info.summary());
    opened
}

/// A fixture file. The checkout root comes from CARGO_MANIFEST_DIR at run time when set (so a
/// test binary copied to another machine finds the fixtures of its checkout there).
pub fn fixture(name: &str) -> std::path::PathBuf {
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    std::path::Path::new(&root).join("tests/fixtures").join(name)
}
