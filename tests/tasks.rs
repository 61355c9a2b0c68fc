//! The built-in tasks and their metrics, held to the definitions in
//! www/assets/builtin/tasks/README.md: the gold completions score 100%, empty outputs 0%, and
//! `tinytune eval --task` runs end to end.

use std::path::Path;
use std::process::Command;

use tinytune::tasks::{Task, cut, score};

fn task(name: &str) -> Task {
    Task::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("www/assets/builtin/tasks").join(name).to_str().unwrap()).unwrap()
}

#[test]
fn gold_completions_score_100_percent_and_empty_outputs_0() {
    for name in ["json", "sql", "style", "qa", "pirate-prefs"] {
        let t = task(name);
        assert_eq!(t.test.len(), 200, "{name}");
        // A model that always prefers the chosen completion, and one that never does.
        let (always, never) = (vec![true; t.rejected.len()], vec![false; t.rejected.len()]);
        let gold: Vec<String> = t.test.iter().map(|(_, c)| cut(c, t.stop.as_deref()).to_string()).collect();
        for m in score(&t, &gold, &always) {
            assert_eq!(m.score, 1.0, "{name} {}: gold must score 100%", m.kind);
        }
        let empty = vec![String::new(); t.test.len()];
        for m in score(&t, &empty, &never) {
            assert_eq!(m.score, 0.0, "{name} {}: empty must score 0%", m.kind);
        }
    }
}

#[test]
fn eval_task_generates_and_scores_with_the_model() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .current_dir(root)
        .args(["eval", "--device", "cpu", "--model", "tests/fixtures/tiny-llama", "--task", "json", "--limit", "3", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["examples"], 3);
    let metrics = report["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["kind"], "json_keys");
    // The fixture model never saw this task: it cannot produce the JSON frame.
    assert_eq!(metrics[0]["score"], 0.0);
    let unknown = Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .current_dir(root)
        .args(["eval", "--model", "tests/fixtures/tiny-llama", "--task", "nope"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no task 'nope'"));
}

#[test]
fn the_preference_task_holds_pairs_and_its_rejected_completions_fail_the_style_metric() {
    let t = task("pirate-prefs");
    assert_eq!(t.rejected.len(), t.test.len());
    assert_eq!(t.metrics[0].kind, "preference_accuracy");
    // Every rejected completion misses the pirate style the chosen one has.
    let rejected: Vec<String> = t.rejected.iter().map(|r| cut(r, t.stop.as_deref()).to_string()).collect();
    let style = &t.metrics[1];
    assert_eq!(style.kind, "style_markers");
    for ((_, chosen), r) in t.test.iter().zip(&rejected) {
        assert!(!tinytune::tasks::passes(style, r, chosen), "a rejected completion speaks pirate: {r:?}");
    }
}

#[test]
fn eval_task_scores_preference_pairs_by_the_model_s_own_log_probabilities() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .current_dir(root)
        .args(["eval", "--device", "cpu", "--model", "www/assets/builtin/model", "--task", "pirate-prefs", "--limit", "4", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let metrics = report["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["kind"], "preference_accuracy");
    let share = metrics[0]["score"].as_f64().unwrap();
    // Four pairs: a share in quarters.
    assert!((share * 4.0 - (share * 4.0).round()).abs() < 1e-9, "{share}");
}

#[test]
fn few_shot_prompting_writes_the_first_examples_before_every_other_prompt() {
    let t = task("json");
    let shot = t.few_shot(2).unwrap();
    assert_eq!(shot.test.len(), t.test.len() - 2);
    let prefix = format!("{}{}{}{}", t.test[0].0, t.test[0].1, t.test[1].0, t.test[1].1);
    assert_eq!(shot.test[0].0, format!("{prefix}{}", t.test[2].0));
    assert_eq!(shot.test[0].1, t.test[2].1, "the gold answer is the scored example's own");
    assert!(t.few_shot(200).unwrap_err().to_string().contains("leave none"));
    let prefs = task("pirate-prefs").few_shot(3).unwrap();
    assert_eq!(prefs.rejected.len(), prefs.test.len());
}
