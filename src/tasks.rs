//! Finetuning tasks and their metrics (`tinytune eval --task NAME`): a folder with `task.json`
//! and `test.jsonl` of `{"prompt", "completion"}` lines. Generation is greedy, cut at the task's
//! stop string (and EOS, and `max_new_tokens`). The metric definitions are those of
//! `www/assets/builtin/tasks/README.md`; `scripts/builtin/check_tasks.py` is the Python reference.

use std::collections::HashSet;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::generate::{Sampling, generate};
use crate::model::Model;
use crate::{Error, Result};

/// Whitespace as the task definitions mean it: space, \t, \n, \v, \f, \r.
const WS: &[char] = &[' ', '\t', '\n', '\u{0B}', '\u{0C}', '\r'];

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MetricSpec {
    pub kind: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub normalize: Option<String>,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub suffix: String,
    #[serde(default)]
    pub forbidden_words: Vec<String>,
    /// For `tinysql_valid`: table → columns (`{"column", "type"}`), from the task's `schema`.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
struct TaskFile {
    name: String,
    #[serde(default)]
    description: String,
    metric: MetricSpec,
    #[serde(default)]
    extra_metrics: Vec<MetricSpec>,
    max_new_tokens: usize,
    #[serde(default)]
    stop: Option<String>,
    #[serde(default)]
    files: Option<serde_json::Value>,
    #[serde(default)]
    schema: Option<serde_json::Value>,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    pub description: String,
    pub metrics: Vec<MetricSpec>,
    pub max_new_tokens: usize,
    pub stop: Option<String>,
    /// Where it came from (a folder, or a name in the page).
    pub dir: String,
    /// (prompt, gold completion); for preference pairs the gold is the chosen completion.
    pub test: Vec<(String, String)>,
    /// For preference pairs (`{"prompt", "chosen", "rejected"}` lines): the rejected completion of
    /// each test line; empty otherwise.
    pub rejected: Vec<String>,
}

impl Task {
    /// A task by folder, or by name among the built-in tasks (`www/assets/builtin/tasks/NAME`
    /// under the current directory).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(name_or_dir: &str) -> Result<Task> {
        let as_dir = PathBuf::from(name_or_dir);
        let dir = if as_dir.join("task.json").exists() {
            as_dir
        } else {
            let builtin = Path::new("www/assets/builtin/tasks").join(name_or_dir);
            if !builtin.join("task.json").exists() {
                return Err(Error::input(format!(
                    "no task '{name_or_dir}': pass a folder with task.json and test.jsonl, or a built-in task name (json, sql, style, qa, pirate-prefs) from the repository root"
                )));
            }
            builtin
        };
        let text = std::fs::read_to_string(dir.join("task.json")).map_err(|e| Error::io(dir.join("task.json"), e))?;
        let test_name = Task::test_file(&text, &dir.join("task.json").display().to_string())?;
        let path = dir.join(&test_name);
        let contents = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Task::from_texts(&text, &contents, &dir.display().to_string())
    }

    /// The name of the test split's file that `task.json` names (default `test.jsonl`).
    pub fn test_file(task_json: &str, label: &str) -> Result<String> {
        let file: TaskFile = serde_json::from_str(task_json).map_err(|e| Error::input(format!("{label}: {e}")))?;
        Ok(file.files.as_ref().and_then(|f| f.get("test")).and_then(|t| t.as_str()).unwrap_or("test.jsonl").to_string())
    }

    /// A task from the texts of its `task.json` and test split; `label` names it in errors.
    pub fn from_texts(task_json: &str, test_jsonl: &str, label: &str) -> Result<Task> {
        let file: TaskFile = serde_json::from_str(task_json).map_err(|e| Error::input(format!("{label}/task.json: {e}")))?;
        let mut test = Vec::new();
        let mut rejected = Vec::new();
        for (i, line) in test_jsonl.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::input(format!("{label} test line {}: not valid JSON ({e})", i + 1)))?;
            let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
            match (get("prompt"), get("completion"), get("chosen"), get("rejected")) {
                (Some(p), Some(c), None, None) if rejected.is_empty() => test.push((p, c)),
                (Some(p), None, Some(c), Some(r)) if rejected.len() == test.len() => {
                    test.push((p, c));
                    rejected.push(r);
                }
                _ => {
                    return Err(Error::input(format!(
                        "{label} test line {}: needs \"prompt\" and \"completion\" strings, or \"prompt\", \"chosen\" and \
                         \"rejected\" (the same kind on every line)",
                        i + 1
                    )));
                }
            }
        }
        let mut metrics = vec![file.metric];
        metrics.extend(file.extra_metrics);
        for m in &mut metrics {
            if m.kind == "tinysql_valid" && m.schema.is_none() {
                m.schema = file.schema.clone();
            }
            if m.kind == "tinysql_valid" && m.schema.is_none() {
                return Err(Error::input(format!("{label}: the tinysql_valid metric needs the task's \"schema\"")));
            }
        }
        for m in &metrics {
            if !matches!(m.kind.as_str(), "exact_match" | "json_keys" | "json_values" | "style_markers" | "tinysql_valid" | "preference_accuracy") {
                return Err(Error::input(format!("{label}: unknown metric kind '{}'", m.kind)));
            }
            if m.kind == "preference_accuracy" && rejected.is_empty() {
                return Err(Error::input(format!(
                    "{label}: the preference_accuracy metric needs test lines of {{\"prompt\", \"chosen\", \"rejected\"}}"
                )));
            }
        }
        Ok(Task {
            name: file.name,
            description: file.description,
            metrics,
            max_new_tokens: file.max_new_tokens,
            stop: file.stop,
            dir: label.to_string(),
            test,
            rejected,
        })
    }
}

impl Task {
    /// The task as a few-shot prompt sees it: the first `shots` test examples, each prompt with
    /// its gold completion, are written before every other test prompt, and scoring runs on
    /// those others. Prompting needs no training, so this is the baseline a finetune must beat.
    pub fn few_shot(&self, shots: usize) -> Result<Task> {
        if shots == 0 {
            return Ok(self.clone());
        }
        if shots >= self.test.len() {
            return Err(Error::input(format!("{shots} shots leave none of the task's {} test examples to score", self.test.len())));
        }
        let prefix: String = self.test[..shots].iter().map(|(p, c)| format!("{p}{c}")).collect();
        Ok(Task {
            test: self.test[shots..].iter().map(|(p, c)| (format!("{prefix}{p}"), c.clone())).collect(),
            rejected: self.rejected.iter().skip(shots).cloned().collect(),
            ..self.clone()
        })
    }
}

/// The text before the first `stop`.
pub fn cut<'a>(output: &'a str, stop: Option<&str>) -> &'a str {
    match stop.and_then(|s| output.find(s)) {
        Some(i) => &output[..i],
        None => output,
    }
}

fn normalize_ws(s: &str) -> String {
    s.split(WS).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Rejects duplicate keys anywhere (serde_json would keep the last one silently).
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NoDuplicates;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_unit<E>(self) -> std::result::Result<NoDuplicates, E> {
                Ok(NoDuplicates)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> std::result::Result<NoDuplicates, A::Error> {
                while a.next_element::<NoDuplicates>()?.is_some() {}
                Ok(NoDuplicates)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> std::result::Result<NoDuplicates, A::Error> {
                let mut seen = HashSet::new();
                while let Some(k) = a.next_key::<String>()? {
                    if !seen.insert(k) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    a.next_value::<NoDuplicates>()?;
                }
                Ok(NoDuplicates)
            }
        }
        d.deserialize_any(V)
    }
}

/// Exactly one JSON object (RFC 8259 as serde_json reads it), without duplicate keys.
fn parse_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_str::<NoDuplicates>(text).ok()?;
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Whether one output (already cut at the stop string) passes a metric against the gold
/// completion.
pub fn passes(spec: &MetricSpec, output: &str, gold: &str) -> bool {
    let gold = cut(gold, Some("\n"));
    match spec.kind.as_str() {
        "exact_match" => normalize_ws(output) == normalize_ws(gold),
        "json_keys" | "json_values" => {
            let Some(obj) = parse_object(output.trim_matches(WS)) else { return false };
            let mut keys: Vec<&String> = obj.keys().collect();
            keys.sort();
            let mut want: Vec<&String> = spec.keys.iter().collect();
            want.sort();
            if keys != want {
                return false;
            }
            if spec.kind == "json_keys" {
                return true;
            }
            let Some(gold) = parse_object(gold.trim_matches(WS)) else { return false };
            spec.keys.iter().all(|k| matches!((obj.get(k), gold.get(k)), (Some(serde_json::Value::String(a)), Some(b)) if Some(a.as_str()) == b.as_str()))
        }
        "style_markers" => {
            let text = normalize_ws(output);
            if !(text.starts_with(&spec.prefix) && text.ends_with(&spec.suffix) && text.len() > spec.prefix.len() + spec.suffix.len()) {
                return false;
            }
            let forbidden: Vec<String> = spec.forbidden_words.iter().map(|w| w.to_lowercase()).collect();
            !text
                .split(|c: char| !c.is_ascii_alphabetic())
                .filter(|w| !w.is_empty())
                .any(|w| forbidden.contains(&w.to_lowercase()))
        }
        "tinysql_valid" => spec.schema.as_ref().is_some_and(|schema| tinysql_valid(&normalize_ws(output), schema)),
        _ => false,
    }
}

/// Whether `q` is a query in TinySQL's grammar (see the task README) over the schema: a known
/// table, only its columns, numbers compared with number columns and quoted text with text ones.
/// It says nothing about whether it answers the question; `exact_match` does.
fn tinysql_valid(q: &str, schema: &serde_json::Value) -> bool {
    fn eat(rest: &mut &str, lit: &str) -> bool {
        match rest.strip_prefix(lit) {
            Some(r) => {
                *rest = r;
                true
            }
            None => false,
        }
    }
    fn word<'a>(rest: &mut &'a str) -> &'a str {
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let (w, r) = rest.split_at(end);
        *rest = r;
        w
    }
    let Some(mut rest) = q.strip_prefix("FETCH ").and_then(|r| r.strip_suffix(';')) else { return false };
    let Some((select, after)) = rest.split_once(" FROM ") else { return false };
    rest = after;
    let table = word(&mut rest);
    let Some(columns) = schema.get(table).and_then(|c| c.as_array()) else { return false };
    let kind_of = |c: &str| columns.iter().find(|x| x.get("column").and_then(|v| v.as_str()) == Some(c)).and_then(|x| x.get("type")?.as_str());
    let select_ok = select == "*" || select == "COUNT OF *" || select.split(", ").all(|c| kind_of(c).is_some());
    if !select_ok {
        return false;
    }
    if eat(&mut rest, " WHERE ") {
        loop {
            let Some(kind) = kind_of(word(&mut rest)) else { return false };
            if !(eat(&mut rest, " = ") || eat(&mut rest, " > ") || eat(&mut rest, " < ")) {
                return false;
            }
            let value_ok = if kind == "number" {
                let n = word(&mut rest);
                !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
            } else {
                eat(&mut rest, "'") && rest.find('\'').is_some_and(|end| {
                    let ok = end > 0;
                    rest = &rest[end + 1..];
                    ok
                })
            };
            if !value_ok {
                return false;
            }
            if !eat(&mut rest, " AND ") {
                break;
            }
        }
    }
    if eat(&mut rest, " ORDER BY ") {
        if kind_of(word(&mut rest)).is_none() || !(eat(&mut rest, " UP") || eat(&mut rest, " DOWN")) {
            return false;
        }
    }
    if eat(&mut rest, " LIMIT TO ") {
        let n = word(&mut rest);
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    rest.is_empty()
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricResult {
    pub kind: String,
    pub label: String,
    pub score: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    pub task: String,
    pub examples: usize,
    pub metrics: Vec<MetricResult>,
    /// The first few (prompt, output, gold) triples, to look at.
    pub samples: Vec<(String, String, String)>,
}

/// Score outputs (already cut) against the task's gold completions. `prefers` holds, per test
/// pair, whether the model gives the chosen completion the higher log-probability (the
/// `preference_accuracy` metric; empty for other tasks).
pub fn score(task: &Task, outputs: &[String], prefers: &[bool]) -> Vec<MetricResult> {
    task.metrics
        .iter()
        .map(|m| {
            let (hits, n) = if m.kind == "preference_accuracy" {
                (prefers.iter().filter(|p| **p).count(), prefers.len())
            } else {
                (outputs.iter().zip(&task.test).filter(|(o, (_, g))| passes(m, o, g)).count(), outputs.len())
            };
            MetricResult { kind: m.kind.clone(), label: m.label.clone(), score: hits as f64 / n.max(1) as f64 }
        })
        .collect()
}

/// Generate greedily for the first `limit` test prompts and score them.
pub async fn evaluate(model: &Model, task: &Task, limit: Option<usize>, mut progress: impl FnMut(usize, usize)) -> Result<TaskReport> {
    let n = limit.unwrap_or(task.test.len()).min(task.test.len());
    let sampling = Sampling { max_new_tokens: task.max_new_tokens, temperature: 0.0, ..Sampling::default() };
    let mut outputs = Vec::with_capacity(n);
    for (i, (prompt, _)) in task.test[..n].iter().enumerate() {
        let ids = model.tokenizer.encode(prompt, true)?;
        let mut text = String::new();
        let stop = task.stop.clone();
        generate(model, &ids, &sampling, |_, t| {
            text.push_str(t);
            !stop.as_deref().is_some_and(|s| text.contains(s))
        })
        .await?;
        outputs.push(cut(&text, task.stop.as_deref()).to_string());
        progress(i + 1, n);
    }
    let mut prefers = Vec::new();
    if task.metrics.iter().any(|m| m.kind == "preference_accuracy") {
        for ((prompt, chosen), rejected) in task.test[..n].iter().zip(&task.rejected) {
            prefers.push(crate::train::preference::prefers_chosen(model, prompt, chosen, rejected).await?);
        }
    }
    let sub = Task { test: task.test[..n].to_vec(), ..task.clone() };
    let samples = sub.test.iter().zip(&outputs).take(5).map(|((p, g), o)| (p.clone(), o.clone(), g.clone())).collect();
    Ok(TaskReport { task: task.name.clone(), examples: n, metrics: score(&sub, &outputs, &prefers), samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> MetricSpec {
        MetricSpec {
            kind: kind.into(),
            label: String::new(),
            keys: vec!["name".into(), "animal".into()],
            normalize: Some("whitespace".into()),
            prefix: "Ahoy! ".into(),
            suffix: ", arr!".into(),
            forbidden_words: vec!["my".into(), "is".into()],
            schema: Some(serde_json::json!({
                "pets": [{"column": "name", "type": "text"}, {"column": "animal", "type": "text"}, {"column": "age", "type": "number"}],
                "toys": [{"column": "name", "type": "text"}, {"column": "price", "type": "number"}]
            })),
        }
    }

    #[test]
    fn tinysql_valid_accepts_the_grammar_over_the_schema_and_nothing_else() {
        let ok = |q: &str| passes(&spec("tinysql_valid"), q, "");
        assert!(ok(" FETCH name FROM pets WHERE animal = 'dog' ORDER BY age DOWN LIMIT TO 2;"));
        assert!(ok("FETCH * FROM toys;"));
        assert!(ok("FETCH COUNT OF * FROM toys WHERE price > 3;"));
        assert!(ok("FETCH name, price FROM toys WHERE name = 'teddy bear' AND price < 10;"));
        // Valid but wrong answers still pass: this metric is about the dialect only.
        assert!(ok("FETCH age FROM pets WHERE name = 'Rex';"));
        assert!(!ok("SELECT name FROM pets;"), "standard SQL is not the dialect");
        assert!(!ok("FETCH name FROM pets"), "missing semicolon");
        assert!(!ok("FETCH price FROM pets;"), "pets has no price");
        assert!(!ok("FETCH name FROM kids;"), "unknown table");
        assert!(!ok("FETCH name FROM pets WHERE age = 'old';"), "text for a number column");
        assert!(!ok("FETCH name FROM pets WHERE animal = 3;"), "number for a text column");
        assert!(!ok("FETCH name FROM pets ORDER BY age ASC;"), "ASC is not TinySQL");
        assert!(!ok("FETCH name FROM pets WHERE animal = 'g' ANDRDER BY age > 18;"));
        assert!(!ok("FETCH name FROM pets LIMIT 2;"), "LIMIT TO");
    }

    #[test]
    fn json_metrics_want_one_object_with_exactly_the_keys() {
        let gold = " {\"name\": \"Mia\", \"animal\": \"fox\"}\n";
        assert!(passes(&spec("json_keys"), " {\"animal\": \"cat\", \"name\": \"Mia\"} ", gold));
        assert!(!passes(&spec("json_values"), " {\"animal\": \"cat\", \"name\": \"Mia\"} ", gold));
        assert!(passes(&spec("json_values"), "{\"name\":\"Mia\",\"animal\":\"fox\"}", gold));
        assert!(!passes(&spec("json_keys"), "{\"name\": \"Mia\", \"name\": \"Mia\", \"animal\": \"fox\"}", gold), "duplicate key");
        assert!(!passes(&spec("json_keys"), "{\"name\": \"Mia\"}", gold), "missing key");
        assert!(!passes(&spec("json_keys"), "{\"name\": \"Mia\", \"animal\": \"fox\"} extra", gold), "trailing text");
        assert!(!passes(&spec("json_keys"), "", gold));
    }

    #[test]
    fn exact_match_normalises_whitespace_only() {
        assert!(passes(&spec("exact_match"), "  FETCH  name FROM pets;", " FETCH name FROM pets;\n"));
        assert!(!passes(&spec("exact_match"), "fetch name FROM pets;", " FETCH name FROM pets;\n"));
    }

    #[test]
    fn style_markers_need_the_frame_and_no_forbidden_word() {
        assert!(passes(&spec("style_markers"), "Ahoy! Me dog be happy, arr!", ""));
        assert!(!passes(&spec("style_markers"), "Ahoy! My dog be happy, arr!", ""));
        assert!(!passes(&spec("style_markers"), "Ahoy! , arr!", ""));
    }
}
