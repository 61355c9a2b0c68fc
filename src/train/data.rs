//! Reading the user's data. Every bad line is reported with its line number and the reason;
//! nothing is dropped silently.
//!
//! Formats (by file extension):
//! - `.txt`: one record per non-empty line (for `eval`), or one stream (continued pretraining).
//! - `.jsonl`: one JSON object per line with a `"text"` string.

use std::path::Path;

use crate::{Error, Result};

/// Parse text records from the contents of a file named `name`.
pub fn parse_texts(name: &str, contents: &str) -> Result<Vec<String>> {
    let jsonl = name.ends_with(".jsonl") || name.ends_with(".json");
    let mut out = Vec::new();
    for (i, line) in contents.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if !jsonl {
            out.push(line.to_string());
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::input(format!("{name} line {n}: not valid JSON ({e})")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::input(format!("{name} line {n}: expected a JSON object like {{\"text\": \"...\"}}")))?;
        match obj.get("text") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => out.push(s.clone()),
            Some(serde_json::Value::String(_)) => {
                return Err(Error::input(format!("{name} line {n}: \"text\" is empty")));
            }
            Some(other) => {
                return Err(Error::input(format!("{name} line {n}: \"text\" must be a string, not {}", kind(other))));
            }
            None => return Err(Error::input(format!("{name} line {n}: missing the \"text\" field"))),
        }
    }
    if out.is_empty() {
        return Err(Error::input(format!("{name} has no records")));
    }
    Ok(out)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Read text records from a file.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let contents = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_texts(&path.display().to_string(), &contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_json_is_named_by_its_number() {
        let err = parse_texts("d.jsonl", "{\"text\": \"a\"}\n\n{oops\n").unwrap_err().to_string();
        assert!(err.contains("d.jsonl line 3: not valid JSON"), "{err}");
    }

    #[test]
    fn missing_or_mistyped_text_fields_are_errors() {
        let err = parse_texts("d.jsonl", "{\"txt\": \"a\"}").unwrap_err().to_string();
        assert!(err.contains("line 1: missing the \"text\" field"), "{err}");
        let err = parse_texts("d.jsonl", "{\"text\": 3}").unwrap_err().to_string();
        assert!(err.contains("must be a string, not a number"), "{err}");
    }

    #[test]
    fn text_files_give_one_record_per_non_empty_line() {
        assert_eq!(parse_texts("a.txt", "one\n\n two \n").unwrap(), vec!["one", " two "]);
    }
}
