//! Property tests (proptest) over every parser of untrusted input: a few thousand inputs per
//! parser, each a committed seed (`fuzz/corpus/<target>/seed-*`) with random edits or plain
//! random bytes, must give an answer (`Ok` or a clear `Err`) and never panic. The fuzzer
//! (`examples/fuzz.rs`) runs the same targets for millions of executions.

#[path = "../fuzz/targets.rs"]
mod targets;

use proptest::prelude::*;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")))
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

/// A seed with up to eight edits (overwrite, insert, delete, truncate), or random bytes.
fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    let n = seeds.len();
    let edited = (0..n, prop::collection::vec((any::<u32>(), 0u8..4, any::<u8>()), 0..8)).prop_map(move |(i, edits)| {
        let mut input = seeds[i].clone();
        for (at, op, byte) in edits {
            let len = input.len();
            let at = at as usize % (len + 1);
            match op {
                0 if at < len => input[at] = byte,
                1 => input.insert(at, byte),
                2 if at < len => {
                    input.remove(at);
                }
                _ => input.truncate(at),
            }
        }
        input
    });
    prop_oneof![4 => edited, 1 => prop::collection::vec(any::<u8>(), 0..256)]
}

fn check(name: &str, input: &[u8]) {
    let target = targets::TARGETS.iter().find(|(n, _)| *n == name).unwrap().1;
    // Any answer is fine; a panic fails the property (proptest reports and shrinks it).
    let _ = target(input);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_json_never_panics(input in inputs("config")) { check("config", &input) }

    #[test]
    fn run_toml_never_panics(input in inputs("run_toml")) { check("run_toml", &input) }

    #[test]
    fn data_files_never_panic(input in inputs("data")) { check("data", &input) }

    #[test]
    fn chat_templates_never_panic(input in inputs("chat_template")) { check("chat_template", &input) }

    #[test]
    fn safetensors_never_panic(input in inputs("safetensors")) { check("safetensors", &input) }

    #[test]
    fn quant_states_never_panic(input in inputs("quant_state")) { check("quant_state", &input) }

    #[test]
    fn adapters_never_panic(input in inputs("adapter")) { check("adapter", &input) }

    #[test]
    fn gguf_files_never_panic(input in inputs("gguf")) { check("gguf", &input) }
}

proptest! {
    // Each case parses a 20 KB tokenizer.json: fewer cases keep the test quick.
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tokenizers_never_panic(input in inputs("tokenizer")) { check("tokenizer", &input) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// A run config survives run.toml both ways, whatever its values.
    #[test]
    fn run_toml_round_trips(rank in 1usize..4096, steps in 0usize..1_000_000, lr in 1e-9f64..10.0, seed in any::<u64>(),
                            batch in 1usize..4096, model in "[a-zA-Z0-9 /._\"'\\\\-]{0,24}") {
        let run = tinytune::train::run::RunConfig { model, rank, steps, lr, seed, batch_size: batch, ..Default::default() };
        let back = tinytune::train::run::RunConfig::from_toml(&run.to_toml()).unwrap();
        prop_assert_eq!(back.to_toml(), run.to_toml());
    }
}
