//! Serving several adapters on one base: a batch whose rows use different adapters (and prompts
//! of different lengths, left-padded) gives every row exactly the tokens that prompt gives alone
//! with its adapter, greedy, on every device.

use futures_lite::future::block_on;
use tinytune::generate::{Sampling, generate, generate_batch};
use tinytune::lora::peft::PeftAdapter;
use tinytune::model::Model;

use crate::{device_under_test, fixture};

fn alone(model: &mut Model, adapter: Option<&str>, prompt: &[u32], s: &Sampling) -> Vec<u32> {
    let names: Vec<&str> = adapter.into_iter().collect();
    tinytune::lora::set_active(model, &names);
    let (ids, _) = block_on(generate(model, prompt, s, |_, _| true)).unwrap();
    ids
}

#[test]
fn each_row_of_a_multi_lora_batch_gives_what_its_prompt_gives_alone() {
    let device = device_under_test().device;
    let s = Sampling { max_new_tokens: 12, temperature: 0.0, stop_at_eos: true, ..Sampling::default() };
    let cases: [(&str, Vec<(&str, &str)>); 2] = [
        ("tiny-llama", vec![("a", "merge/adapters/a"), ("b", "merge/adapters/b"), ("c", "merge/adapters/c")]),
        ("tiny-gpt2", vec![("g", "tiny-gpt2/adapter")]),
    ];
    for (model_name, adapters) in cases {
        let mut model = Model::load_dir(&fixture(model_name), &device).unwrap();
        for (name, dir) in &adapters {
            PeftAdapter::read_dir(&fixture(dir)).unwrap().load_into(&mut model, name).unwrap();
        }
        // The fixtures' adapters are gentle; scaled up they change the greedy text, so a row
        // served through the wrong adapter (or none) would show.
        for (_, l) in model.arch.linears_mut() {
            l.adapters.iter_mut().for_each(|a| a.scale *= 30.0);
        }
        let texts = ["The old man", "A cat sat on the mat and looked", "Anna went to the", "Where is"];
        let routes: Vec<Option<&str>> = (0..texts.len()).map(|i| if i == 0 { None } else { Some(adapters[i % adapters.len()].0) }).collect();
        let prompts: Vec<Vec<u32>> = texts.iter().map(|t| model.tokenizer.encode(t, true).unwrap()).collect();
        let want: Vec<Vec<u32>> = prompts.iter().zip(&routes).map(|(p, r)| alone(&mut model, *r, p, &s)).collect();
        // The adapters do change what is generated, so the routing is tested, not just the base.
        let base_only: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&mut model, None, p, &s)).collect();
        assert!(
            routes.iter().zip(want.iter().zip(&base_only)).any(|(r, (w, b))| r.is_some() && w != b),
            "{model_name}: the adapters change nothing, so the routing would go untested"
        );
        tinytune::lora::route(&mut model, &routes).unwrap();
        let got = block_on(generate_batch(&model, &prompts, &s, |_, _| true)).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(&g.ids, w, "{model_name} row {i} ({:?}): batch vs alone", routes[i]);
        }
        tinytune::lora::unroute(&mut model);
    }
}
