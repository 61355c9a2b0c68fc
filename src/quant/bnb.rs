//! The bitsandbytes serialization of a 4-bit weight, as transformers' `save_pretrained` writes
//! it (bitsandbytes `QuantState.as_dict(packed=True)`), and the `quantization_config` block of
//! `config.json`. Per quantized linear `<p>`:
//!
//! | key | dtype | shape |
//! |---|---|---|
//! | `<p>.weight` | U8 | `[ceil(n/2), 1]` packed codes |
//! | `<p>.weight.absmax` | U8 (double quant) or F32 | `[blocks]` |
//! | `<p>.weight.quant_map` | F32 | `[16]` the 4-bit code |
//! | `<p>.weight.nested_absmax` | F32 | `[ceil(blocks/256)]` (double quant) |
//! | `<p>.weight.nested_quant_map` | F32 | `[256]` the dynamic map (double quant) |
//! | `<p>.weight.quant_state.bitsandbytes__nf4` | U8 | JSON bytes: quant_type, blocksize, dtype, shape, and nested_blocksize, nested_dtype, nested_offset |

use safetensors::Dtype;
use serde_json::{Value, json};

use super::nf4::{Absmax, Nested, QuantType, Quant4};
use crate::{Error, Result};

/// Suffixes (after `<p>.weight`) of the extra tensors a 4-bit weight brings.
const EXTRA: [&str; 4] = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"];

/// True for the keys that belong to a 4-bit weight's state rather than being weights themselves.
pub fn is_state_key(key: &str) -> bool {
    EXTRA.iter().any(|s| key.ends_with(&format!(".weight{s}"))) || key.contains(".weight.quant_state.")
}

/// One tensor of a file: dtype, shape and raw little-endian bytes.
pub type Raw<'a> = (Dtype, Vec<usize>, &'a [u8]);

fn f32s(key: &str, raw: &Raw) -> Result<Vec<f32>> {
    if raw.0 != Dtype::F32 {
        return Err(Error::input(format!("\"{key}\" is {:?}; bitsandbytes writes it as F32", raw.0)));
    }
    Ok(raw.2.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Read the 4-bit weight stored under `<prefix>.weight`, if it is one. `get` looks a key up.
/// `shape` is the `[out, in]` that config.json implies, checked against the file's.
pub fn read<'a>(prefix: &str, shape: [usize; 2], get: impl Fn(&str) -> Option<Raw<'a>>) -> Result<Option<Quant4>> {
    let wkey = format!("{prefix}.weight");
    let state_key = ["nf4", "fp4"]
        .iter()
        .map(|t| format!("{wkey}.quant_state.bitsandbytes__{t}"))
        .find(|k| get(k).is_some());
    let Some(state_key) = state_key else { return Ok(None) };
    let need = |suffix: &str| -> Result<Raw<'a>> {
        let k = format!("{wkey}{suffix}");
        get(&k).ok_or_else(|| Error::input(format!("the 4-bit weight \"{wkey}\" has no \"{k}\": the checkpoint is incomplete")))
    };
    let state_raw = need(&state_key[wkey.len()..])?;
    let state: Value = serde_json::from_slice(state_raw.2)
        .map_err(|e| Error::input(format!("\"{state_key}\" is not the JSON bitsandbytes writes: {e}")))?;
    let quant_type: QuantType = state["quant_type"].as_str().unwrap_or("").parse()?;
    let blocksize = state["blocksize"].as_u64().ok_or_else(|| Error::input(format!("\"{state_key}\" has no blocksize")))? as usize;
    let file_shape: Vec<usize> = state["shape"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64().map(|x| x as usize)).collect())
        .unwrap_or_default();
    if file_shape != shape {
        return Err(Error::input(format!(
            "the 4-bit weight \"{wkey}\" has shape {file_shape:?} but config.json implies {shape:?}"
        )));
    }
    if blocksize == 0 || !blocksize.is_power_of_two() {
        return Err(Error::input(format!("\"{state_key}\": blocksize {blocksize} is not a power of two")));
    }
    let n = shape[0] * shape[1];
    let blocks = n.div_ceil(blocksize);
    let packed_raw = get(&wkey).ok_or_else(|| Error::input(format!("the checkpoint has no \"{wkey}\"")))?;
    if packed_raw.0 != Dtype::U8 || packed_raw.2.len() != n.div_ceil(2) {
        return Err(Error::input(format!(
            "\"{wkey}\" should be {} packed U8 bytes for a {}×{} weight, not {:?} {:?}",
            n.div_ceil(2),
            shape[0],
            shape[1],
            packed_raw.0,
            packed_raw.1
        )));
    }
    let code = f32s(&format!("{wkey}.quant_map"), &need(".quant_map")?)?;
    if code.as_slice() != quant_type.code().as_slice() {
        return Err(Error::input(format!(
            "\"{wkey}.quant_map\" is not bitsandbytes' {} code; tinytune dequantizes with that code only",
            quant_type.name()
        )));
    }
    let absmax_raw = need(".absmax")?;
    let absmax = if let Some(nested_raw) = get(&format!("{wkey}.nested_absmax")) {
        if absmax_raw.0 != Dtype::U8 || absmax_raw.2.len() != blocks {
            return Err(Error::input(format!("\"{wkey}.absmax\" should be {blocks} U8 codes (double quantization)")));
        }
        let nested_blocksize = state["nested_blocksize"].as_u64().unwrap_or(0) as usize;
        let offset = state["nested_offset"]
            .as_f64()
            .ok_or_else(|| Error::input(format!("\"{state_key}\" has no nested_offset")))? as f32;
        let absmax2 = f32s(&format!("{wkey}.nested_absmax"), &nested_raw)?;
        if nested_blocksize == 0 || absmax2.len() != blocks.div_ceil(nested_blocksize) {
            return Err(Error::input(format!(
                "\"{wkey}.nested_absmax\" has {} values for {blocks} blocks in groups of {nested_blocksize}",
                absmax2.len()
            )));
        }
        let map = f32s(&format!("{wkey}.nested_quant_map"), &need(".nested_quant_map")?)?;
        if map.len() != 256 {
            return Err(Error::input(format!("\"{wkey}.nested_quant_map\" has {} values, not 256", map.len())));
        }
        Absmax::Double(Nested { codes: absmax_raw.2.to_vec(), absmax: absmax2, blocksize: nested_blocksize, map, offset })
    } else {
        let a = f32s(&format!("{wkey}.absmax"), &absmax_raw)?;
        if a.len() != blocks {
            return Err(Error::input(format!("\"{wkey}.absmax\" has {} values for {blocks} blocks", a.len())));
        }
        Absmax::F32(a)
    };
    Ok(Some(Quant4 { quant_type, shape, blocksize, packed: packed_raw.2.to_vec(), absmax, bias: None }))
}

/// The tensors that store `q` under `<prefix>.weight`: (key, dtype, shape, bytes).
pub fn write(prefix: &str, q: &Quant4) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let wkey = format!("{prefix}.weight");
    let f32b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut out = vec![(wkey.clone(), Dtype::U8, vec![q.packed.len(), 1], q.packed.clone())];
    let mut state = json!({
        "quant_type": q.quant_type.name(),
        "blocksize": q.blocksize,
        "dtype": "float32",
        "shape": q.shape,
    });
    match &q.absmax {
        Absmax::F32(a) => out.push((format!("{wkey}.absmax"), Dtype::F32, vec![a.len()], f32b(a))),
        Absmax::Double(n) => {
            out.push((format!("{wkey}.absmax"), Dtype::U8, vec![n.codes.len()], n.codes.clone()));
            out.push((format!("{wkey}.nested_absmax"), Dtype::F32, vec![n.absmax.len()], f32b(&n.absmax)));
            out.push((format!("{wkey}.nested_quant_map"), Dtype::F32, vec![n.map.len()], f32b(&n.map)));
            state["nested_blocksize"] = n.blocksize.into();
            state["nested_dtype"] = "float32".into();
            // The f32 offset as the double Python's `.item()` gives; it reads back exactly.
            state["nested_offset"] = (n.offset as f64).into();
        }
    }
    out.push((format!("{wkey}.quant_map"), Dtype::F32, vec![16], f32b(q.quant_type.code())));
    let json = serde_json::to_vec(&state).expect("state serialises");
    out.push((format!("{wkey}.quant_state.bitsandbytes__{}", q.quant_type.name()), Dtype::U8, vec![json.len()], json));
    out
}

/// How a model's linear weights are quantized, from `config.json`'s `quantization_config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuantConfig {
    pub quant_type: QuantType,
    pub double_quant: bool,
}

impl QuantConfig {
    /// Read `quantization_config`; `None` when the model is not quantized. Only bitsandbytes
    /// 4-bit is understood; anything else is an error that says so.
    pub fn from_config(config: &Value) -> Result<Option<QuantConfig>> {
        let Some(q) = config.get("quantization_config") else { return Ok(None) };
        let method = q.get("quant_method").and_then(|m| m.as_str()).unwrap_or("");
        let four = q.get("load_in_4bit").and_then(|v| v.as_bool()).unwrap_or(false)
            || q.get("_load_in_4bit").and_then(|v| v.as_bool()).unwrap_or(false);
        if method != "bitsandbytes" || !four {
            return Err(Error::input(format!(
                "config.json has a quantization_config (quant_method \"{method}\"{}) that tinytune cannot load: \
                 it reads bitsandbytes 4-bit (nf4, fp4) models. Load the unquantized model instead, or quantize it \
                 with `tinytune quantize`",
                if method == "bitsandbytes" { ", 8-bit" } else { "" }
            )));
        }
        let quant_type = q.get("bnb_4bit_quant_type").and_then(|v| v.as_str()).unwrap_or("fp4").parse()?;
        let double_quant = q.get("bnb_4bit_use_double_quant").and_then(|v| v.as_bool()).unwrap_or(false);
        Ok(Some(QuantConfig { quant_type, double_quant }))
    }

    /// The `quantization_config` transformers writes for `BitsAndBytesConfig(load_in_4bit=True,
    /// bnb_4bit_quant_type=…, bnb_4bit_use_double_quant=…, bnb_4bit_compute_dtype=float32)`.
    pub fn to_config(&self) -> Value {
        json!({
            "_load_in_4bit": true,
            "_load_in_8bit": false,
            "bnb_4bit_compute_dtype": "float32",
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_quant_type": self.quant_type.name(),
            "bnb_4bit_use_double_quant": self.double_quant,
            "llm_int8_enable_fp32_cpu_offload": false,
            "llm_int8_has_fp16_weight": false,
            "llm_int8_skip_modules": null,
            "llm_int8_threshold": 6.0,
            "load_in_4bit": true,
            "load_in_8bit": false,
            "quant_method": "bitsandbytes"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_written_weight_reads_back_identically() {
        let values: Vec<f32> = (0..3 * 100).map(|i| (i as f32 * 0.37).sin()).collect();
        for double in [false, true] {
            let q = Quant4::quantize(&values, [3, 100], QuantType::Nf4, double).unwrap();
            let tensors = write("model.layers.0.mlp.up_proj", &q);
            let map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> =
                tensors.into_iter().map(|(k, d, s, b)| (k, (d, s, b))).collect();
            assert!(map.keys().filter(|k| *k != "model.layers.0.mlp.up_proj.weight").all(|k| is_state_key(k)));
            let back = read("model.layers.0.mlp.up_proj", [3, 100], |k| map.get(k).map(|(d, s, b)| (*d, s.clone(), b.as_slice())))
                .unwrap()
                .unwrap();
            assert_eq!(back, q);
        }
    }

    #[test]
    fn a_shape_that_disagrees_with_the_config_is_named() {
        let q = Quant4::quantize(&[0.5; 64], [4, 16], QuantType::Nf4, false).unwrap();
        let map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> =
            write("p", &q).into_iter().map(|(k, d, s, b)| (k, (d, s, b))).collect();
        let err = read("p", [16, 4], |k| map.get(k).map(|(d, s, b)| (*d, s.clone(), b.as_slice()))).unwrap_err().to_string();
        assert!(err.contains("[4, 16]") && err.contains("[16, 4]"), "{err}");
    }

    #[test]
    fn an_8_bit_config_is_refused_with_a_way_out() {
        let c = json!({"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": true}});
        let err = QuantConfig::from_config(&c).unwrap_err().to_string();
        assert!(err.contains("8-bit") && err.contains("tinytune quantize"), "{err}");
        let c = json!({"quantization_config": QuantConfig { quant_type: QuantType::Nf4, double_quant: true }.to_config()});
        assert_eq!(QuantConfig::from_config(&c).unwrap(), Some(QuantConfig { quant_type: QuantType::Nf4, double_quant: true }));
    }
}
