//! Merging against its references: PEFT's `add_weighted_adapter` (fixtures from
//! `tests/fixtures/make_merge_fixtures.py`), compared as the merged ΔW = s·B·A per module.

mod common;
use common::Scratch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tinytune::lora::peft::PeftAdapter;
use tinytune::merge::combine::{Combination, CombineOptions, Scaling, combine, delta};
use tinytune::merge::ops::MajoritySign;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn adapter(name: &str) -> PeftAdapter {
    PeftAdapter::read_dir(&fixture(&format!("merge/adapters/{name}"))).unwrap()
}

/// PEFT's merged ΔW per module, from the factors it made and the scaling its config gives.
fn peft_deltas(combination: &str) -> BTreeMap<String, Vec<f64>> {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("merge/peft_combined.json")).unwrap()).unwrap();
    let c = &meta["combinations"][combination];
    let (r, alpha) = (c["r"].as_f64().unwrap(), c["lora_alpha"].as_f64().unwrap());
    let s = if c["use_rslora"].as_bool().unwrap() { alpha / r.sqrt() } else { alpha / r };
    let bytes = std::fs::read(fixture("merge/peft_combined.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let read = |k: &str| -> (Vec<f32>, Vec<usize>) {
        let v = st.tensor(k).unwrap();
        (v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), v.shape().to_vec())
    };
    let mut out = BTreeMap::new();
    for name in st.names() {
        let Some(module) = name.strip_prefix(&format!("{combination}/")).and_then(|m| m.strip_suffix(".lora_A")) else { continue };
        let (a, sa) = read(name);
        let (b, sb) = read(&format!("{combination}/{module}.lora_B"));
        out.insert(module.to_string(), delta(&a, &b, sa[0], sa[1], sb[0], s));
    }
    assert!(!out.is_empty(), "no {combination} in the fixture");
    out
}

fn check(combination: &str, adapters: &[&str], weights: &[f64], kind: Combination) {
    let loaded: Vec<PeftAdapter> = adapters.iter().map(|n| adapter(n)).collect();
    let refs: Vec<&PeftAdapter> = loaded.iter().collect();
    let mut opts = CombineOptions::new(kind, weights.to_vec());
    opts.density = Some(0.5);
    opts.majority_sign = MajoritySign::Total;
    let (merged, _) = combine(&refs, &opts, None).unwrap();
    let ours = merged.deltas();
    let want = peft_deltas(combination);
    assert_eq!(ours.len(), want.len(), "{combination}: modules");
    for (module, w) in &want {
        let (got, _) = &ours[module];
        let diff = got.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(diff < 1e-5, "{combination} {module}: max |ΔW - PEFT| {diff:e} (|ΔW| up to {scale:e})");
    }
}

const W: [f64; 3] = [1.0, -0.6, 0.8];

#[test]
fn every_combination_gives_peft_s_merged_update_within_1e_5() {
    for (name, kind) in [
        ("linear", Combination::Linear),
        ("cat", Combination::Cat),
        ("svd", Combination::Svd),
        ("ties", Combination::Ties),
        ("magnitude_prune", Combination::MagnitudePrune),
        ("ties_svd", Combination::TiesSvd),
        ("magnitude_prune_svd", Combination::MagnitudePruneSvd),
    ] {
        check(name, &["a", "b", "c"], &W, kind);
    }
}

#[test]
fn the_rslora_quirk_matches_peft_by_default() {
    check("rslora_cat", &["ra", "rb"], &W[..2], Combination::Cat);
    check("rslora_svd", &["ra", "rb"], &W[..2], Combination::Svd);
    // The exact variant differs from PEFT by √r.
    let (x, y) = (adapter("ra"), adapter("rb"));
    let mut opts = CombineOptions::new(Combination::Cat, W[..2].to_vec());
    opts.scaling = Scaling::Exact;
    let (exact, _) = combine(&[&x, &y], &opts, None).unwrap();
    let want = peft_deltas("rslora_cat");
    let (module, w) = want.iter().next().unwrap();
    let got = &exact.deltas()[module].0;
    let r = exact.config.r as f64;
    assert!(got.iter().zip(w).all(|(a, b)| (a * r.sqrt() - b).abs() < 1e-5));
}

#[test]
fn a_merged_adapter_round_trips_through_peft_files() {
    let (x, y) = (adapter("a"), adapter("b"));
    let (merged, _) = combine(&[&x, &y], &CombineOptions::new(Combination::Cat, vec![1.0, 0.5]), None).unwrap();
    let (config, weights) = merged.to_files().unwrap();
    let back = PeftAdapter::from_bytes(&config, &weights).unwrap();
    assert_eq!(back.modules, merged.modules);
    assert_eq!(back.config.r, 8);
}

fn tinytune(args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tinytune")).args(args).output().unwrap();
    assert!(o.status.success(), "tinytune {args:?}:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn temp(tag: &str) -> Scratch {
    Scratch::path(&format!("merge-{tag}"))
}

#[test]
fn extracting_at_rank_r_recovers_a_merged_rank_r_adapter_within_1e_4() {
    // tiny-llama + its rank-4 PEFT adapter, merged by tinytune; then extracted again at rank 4.
    let (merged, extracted) = (temp("merged"), temp("extracted"));
    let original = fixture("tiny-llama/adapter");
    tinytune(&["merge", "--model", fixture("tiny-llama").to_str().unwrap(), "--adapter", original.to_str().unwrap(), "--out", merged.to_str().unwrap()]);
    let log = tinytune(&[
        "extract-lora", "--base", fixture("tiny-llama").to_str().unwrap(), "--tuned", merged.to_str().unwrap(), "--rank", "4",
        "--out", extracted.to_str().unwrap(), "--json",
    ]);
    let energy: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for e in energy.as_array().unwrap() {
        // A rank-4 change is all kept at rank 4 (up to the f32 rounding of W + ΔW).
        assert!(e["kept"].as_f64().unwrap() > 0.999999, "{e}");
    }
    let want = PeftAdapter::read_dir(&original).unwrap().deltas();
    let got = PeftAdapter::read_dir(&extracted).unwrap().deltas();
    assert_eq!(want.len(), got.len());
    for (module, (w, _)) in &want {
        let diff = got[module].0.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-4, "{module}: max |ΔW - extracted| {diff:e}");
    }
    // And at rank 2 only part of a rank-4 change is kept.
    let low = temp("low");
    let log = tinytune(&["extract-lora", "--base", fixture("tiny-llama").to_str().unwrap(), "--tuned", merged.to_str().unwrap(), "--rank", "2", "--out", low.to_str().unwrap()]);
    assert!(log.contains("energy kept at rank 2"), "{log}");
    for d in [merged, extracted, low] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn the_merge_command_combines_adapters_and_checks_them_against_the_base() {
    let out = temp("combined");
    let log = tinytune(&[
        "merge", "--model", fixture("tiny-llama").to_str().unwrap(),
        "--adapters", &format!("{},{},{}", fixture("merge/adapters/a").display(), fixture("merge/adapters/b").display(), fixture("merge/adapters/c").display()),
        "--weights", "1,-0.6,0.8", "--combination", "ties", "--density", "0.5", "--out", out.to_str().unwrap(),
    ]);
    assert!(log.contains("combined 3 adapters with Ties into one of rank 4 on 14 modules"), "{log}");
    let merged = PeftAdapter::read_dir(&out).unwrap().deltas();
    let want = peft_deltas("ties");
    for (module, w) in &want {
        let diff = merged[module].0.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-5, "{module}: {diff:e}");
    }
    // A pruning type without a density says what to add.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .args(["merge", "--adapters", &format!("{},{}", fixture("merge/adapters/a").display(), fixture("merge/adapters/b").display()), "--combination", "dare_ties", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--density"));
    let _ = std::fs::remove_dir_all(out);
}

fn tensors(path: &Path) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), v.shape().to_vec())))
        .collect()
}

#[test]
fn merge_models_runs_mergekit_configs_unchanged_and_matches_mergekit_within_1e_5() {
    let dir = fixture("merge/mergekit");
    for name in ["linear", "task_arithmetic", "ties", "slerp", "dare_ties"] {
        let out = temp(&format!("mk-{name}"));
        let mut args = vec!["merge-models".to_string(), "--config".into(), dir.join(format!("{name}.yml")).display().to_string(), "--out".into(), out.display().to_string()];
        if name.starts_with("dare") {
            // mergekit-yaml --random-seed 1234: the same MT19937 stream, the same masks.
            args.extend(["--seed".into(), "1234".into()]);
        }
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        tinytune(&refs);
        let want = tensors(&dir.join(format!("out_{name}/model.safetensors")));
        let got = tensors(&out.join("model.safetensors"));
        assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "{name}: tensor names");
        for (k, (w, shape)) in &want {
            let (g, gshape) = &got[k];
            assert_eq!(shape, gshape, "{name} {k}");
            let diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{name} {k}: max |Δ| {diff:e}");
        }
        // The merged folder is a model: it loads and evaluates.
        let m = tinytune::model::Model::load_dir(&out, &burn::tensor::Device::flex()).unwrap();
        assert_eq!(m.config.layers(), 2);
        let _ = std::fs::remove_dir_all(out);
    }
}
