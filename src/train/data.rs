//! Reading the user's data: eval texts, and training examples with a per-token loss mask.
//! Every bad line is reported with its line number and the reason; nothing is dropped silently.
//!
//! Formats (by file extension, and for `.jsonl` by the keys of the first valid line):
//! - `.txt`: for `eval`, one record per non-empty line; for training, one token stream
//!   (continued pretraining).
//! - `.jsonl` with `{"text"}`: one document per line, every token learned.
//! - `.jsonl` with `{"prompt", "completion"}`: SFT, only the completion learned (TRL's
//!   `completion_only_loss`).
//! - `.jsonl` with `{"messages": [{"role", "content"}]}`: chat, rendered with the model's chat
//!   template as transformers' `apply_chat_template` renders it, only the assistant's turns
//!   learned (TRL's `assistant_only_loss`).
//!
//! Then `train::batch` holds out a validation set and pads or packs the examples into rows.

use std::path::Path;

pub use super::chat::{ChatTemplate, Message, PLAIN_CHAT_TEMPLATE};
use crate::model::Tokenizer;
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
            None => {
                // A training file handed to eval: say what it is and what scores it.
                let record = if obj.contains_key("messages") {
                    Some("a chat record")
                } else if obj.contains_key("prompt") || obj.contains_key("completion") {
                    Some("a prompt/completion record")
                } else {
                    None
                };
                let hint = record.map_or(String::new(), |r| {
                    format!(" ({r}, a training format: eval reads {{\"text\"}} records; the held-out split of a run trained on this file is scored, target tokens only, by `tinytune eval --valid-of <run>/run.toml`)")
                });
                return Err(Error::input(format!("{name} line {n}: missing the \"text\" field{hint}")));
            }
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

// ---------------------------------------------------------------------------------------------
// Training data
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `.txt` file: one token stream, cut into windows (continued pretraining).
    Text,
    /// `{"text": "..."}` per line.
    JsonlText,
    /// `{"prompt": "...", "completion": "..."}` per line.
    PromptCompletion,
    /// `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}]}` per line.
    Chat,
    /// `{"prompt": "...", "chosen": "...", "rejected": "..."}` per line (preference pairs, for DPO).
    Preference,
}

impl Format {
    /// The keys a JSONL line of this format must have.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Format::Text => &[],
            Format::JsonlText => &["text"],
            Format::PromptCompletion => &["prompt", "completion"],
            Format::Chat => &["messages"],
            Format::Preference => &["prompt", "chosen", "rejected"],
        }
    }

    /// `{"prompt", "completion"}`, as error messages show the shape of a line.
    fn shape(self) -> String {
        let keys: Vec<String> = self.keys().iter().map(|k| format!("\"{k}\"")).collect();
        format!("{{{}}}", keys.join(", "))
    }

    /// The JSONL format an object's keys announce, if any.
    fn of_object(obj: &serde_json::Map<String, serde_json::Value>) -> Option<Format> {
        [Format::Chat, Format::Preference, Format::PromptCompletion, Format::JsonlText]
            .into_iter()
            .find(|f| f.keys().iter().all(|k| obj.contains_key(*k)))
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Text => "plain text",
            Format::JsonlText => "text (JSONL)",
            Format::PromptCompletion => "prompt/completion (JSONL)",
            Format::Chat => "chat (JSONL)",
            Format::Preference => "preference pairs (JSONL)",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadLine {
    /// Fail at the first bad line.
    Stop,
    /// Leave bad lines out and list them in [`Dataset::skipped`].
    Skip,
}

#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Tokens the model sees per row; an example holds at most `seq_len + 1` tokens, which give
    /// `seq_len` predictions.
    pub seq_len: usize,
    /// Also learn the prompt (prompt/completion) or the non-assistant turns (chat).
    pub train_on_prompt: bool,
    pub on_bad_line: OnBadLine,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions { seq_len: 256, train_on_prompt: false, on_bad_line: OnBadLine::Stop }
    }
}

/// A line left out of the data, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based, as editors count.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// One training example: `ids` and, per token, whether it is a loss target (predicted from the
/// tokens before it). `target[0]` never counts: nothing comes before the first token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub target: Vec<bool>,
    /// For a preference pair (DPO): the rejected row; `ids`/`target` hold the chosen one.
    pub rejected: Option<Box<Example>>,
}

impl Example {
    /// An example to learn from as it stands (not a preference pair).
    pub fn new(ids: Vec<u32>, target: Vec<bool>) -> Example {
        Example { ids, target, rejected: None }
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub format: Format,
    pub examples: Vec<Example>,
    /// Bad lines left out (only with [`OnBadLine::Skip`]).
    pub skipped: Vec<BadLine>,
    /// Examples cut to `seq_len + 1` tokens.
    pub truncated: usize,
}

/// Read training examples from the contents of a file named `name` (the extension picks the
/// format, see the module docs).
pub fn load_dataset(name: &str, contents: &str, tok: &Tokenizer, opts: &DataOptions) -> Result<Dataset> {
    if opts.seq_len == 0 {
        return Err(Error::input("seq_len is 0: it must be at least 1 token"));
    }
    let eos = *tok.eos_ids.first().ok_or_else(|| {
        Error::input(
            "the model has no end-of-sequence token, so examples cannot be ended: set eos_token_id in \
             generation_config.json or config.json",
        )
    })?;
    // Editors on Windows write a byte-order mark; it is not part of the data.
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut loader = Loader { name, tok, opts, eos, template: None, examples: vec![], skipped: vec![], truncated: 0 };
    let extension = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    let format = if extension == "txt" {
        loader.text_stream(contents)?;
        Format::Text
    } else if extension == "jsonl" {
        loader.jsonl(contents)?
    } else if extension == "json" {
        // A JSON array of the same records a .jsonl file has one per line.
        let records: Vec<serde_json::Value> = serde_json::from_str(contents).map_err(|e| {
            Error::input(format!("{name}: a .json data file must be one JSON array of records ({e}); or use .jsonl, one record per line"))
        })?;
        let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        loader.jsonl(&lines.join("\n"))?
    } else {
        return Err(Error::input(format!(
            "{name}: unknown data format. Use .txt for plain text, .jsonl with one JSON object per line \
             ({{\"text\"}}, {{\"prompt\", \"completion\"}}, {{\"messages\"}} or {{\"prompt\", \"chosen\", \"rejected\"}}), \
             or .json with an array of them"
        )));
    };
    if loader.examples.is_empty() {
        let why = match loader.skipped.first() {
            Some(first) => format!(": all {} lines were bad, the first is {first}", loader.skipped.len()),
            None => String::new(),
        };
        return Err(Error::input(format!("{name} has no examples to train on{why}")));
    }
    Ok(Dataset { format, examples: loader.examples, skipped: loader.skipped, truncated: loader.truncated })
}

/// Read training examples from a file (see [`load_dataset`]).
pub fn read_dataset(path: &Path, tok: &Tokenizer, opts: &DataOptions) -> Result<Dataset> {
    let contents = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    load_dataset(&path.display().to_string(), &contents, tok, opts)
}

/// What one valid JSONL line holds.
enum Record {
    Text(String),
    PromptCompletion { prompt: String, completion: String },
    Chat(Vec<Message>),
    Preference { prompt: String, chosen: String, rejected: String },
}

struct Loader<'a> {
    name: &'a str,
    tok: &'a Tokenizer,
    opts: &'a DataOptions,
    eos: u32,
    /// Compiled on the first chat line.
    template: Option<ChatTemplate>,
    examples: Vec<Example>,
    skipped: Vec<BadLine>,
    truncated: usize,
}

impl Loader<'_> {
    fn bad(&mut self, line: usize, reason: String) -> Result<()> {
        match self.opts.on_bad_line {
            OnBadLine::Stop => {
                Err(Error::input(format!("{} line {line}: {reason}. Fix the line or pass --skip-bad-lines", self.name)))
            }
            OnBadLine::Skip => {
                self.skipped.push(BadLine { line, reason });
                Ok(())
            }
        }
    }

    /// The whole file is one stream, cut into windows of `seq_len + 1` tokens. Windows do not
    /// overlap, so packing them again gives back the stream; the cost is that the first token of
    /// each window is never predicted (1 in `seq_len + 1`).
    fn text_stream(&mut self, contents: &str) -> Result<()> {
        if contents.trim().is_empty() {
            return Err(Error::input(format!("{} is empty: there is no text to train on", self.name)));
        }
        let mut ids = self.tok.encode(contents, true)?;
        self.end_with_eos(&mut ids);
        for window in ids.chunks(self.opts.seq_len + 1) {
            // A single leftover token predicts nothing.
            if window.len() >= 2 {
                self.examples.push(Example::new(window.to_vec(), vec![true; window.len()]));
            }
        }
        Ok(())
    }

    fn jsonl(&mut self, contents: &str) -> Result<Format> {
        // The format and the line that set it, from the first valid line.
        let mut format: Option<(Format, usize)> = None;
        for (i, line) in contents.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let record = match parse_line(line, format) {
                Ok((f, record)) => {
                    format.get_or_insert((f, n));
                    record
                }
                Err(reason) => {
                    self.bad(n, reason)?;
                    continue;
                }
            };
            match self.example(record) {
                Ok(example) => self.examples.push(example),
                Err(LineError::Bad(reason)) => self.bad(n, reason)?,
                Err(LineError::Fatal(e)) => return Err(e),
            }
        }
        // Without a single valid line the format is moot: the caller reports that there are no examples.
        Ok(format.map(|(f, _)| f).unwrap_or(Format::JsonlText))
    }

    fn example(&mut self, record: Record) -> Result<Example, LineError> {
        let (mut ids, mut target) = match record {
            Record::Preference { prompt, chosen, rejected } => {
                return super::preference::pair(self.tok, &prompt, &chosen, &rejected, self.opts.seq_len).map_err(LineError::Bad);
            }
            Record::Text(text) => {
                let ids = self.tok.encode(&text, true).map_err(LineError::bad)?;
                let n = ids.len();
                (ids, vec![true; n])
            }
            Record::PromptCompletion { prompt, completion } => {
                // No separator goes between them: the prompt should end the way the user wants the
                // completion to follow (a space, a newline, "Answer:"). The whole text is tokenized
                // once, as the model will see it at inference, and the completion is the tokens
                // whose text reaches past the prompt (a token straddling the seam counts as
                // completion). Tokenizing the halves apart would give a SentencePiece tokenizer's
                // completion a stray leading "▁", and BPE a seam it never sees at inference.
                let text = format!("{prompt}{completion}");
                let (ids, offsets) = self.tok.encode_with_offsets(&text, true).map_err(LineError::bad)?;
                let boundary = prompt.len();
                let target = offsets.iter().map(|&(start, end)| end > boundary && end > start || self.opts.train_on_prompt).collect();
                (ids, target)
            }
            Record::Chat(messages) => {
                if self.template.is_none() {
                    self.template = Some(ChatTemplate::new(self.tok).map_err(LineError::Fatal)?);
                }
                let template = self.template.as_ref().expect("set just above");
                template.example(self.tok, &messages, self.opts.train_on_prompt).map_err(LineError::Bad)?
            }
        };
        if !ids.last().is_some_and(|id| self.tok.eos_ids.contains(id)) {
            // The appended EOS ends whatever came last; for chat that is learned only after an
            // assistant turn, for the other formats always.
            let learned = target.last().copied().unwrap_or(true) || self.opts.train_on_prompt;
            ids.push(self.eos);
            target.push(learned);
        }
        let limit = self.opts.seq_len + 1;
        if ids.len() > limit {
            if !target[1..limit].contains(&true) {
                return Err(LineError::Bad(format!(
                    "nothing to learn within seq_len {}: the example is {} tokens and the first one to \
                     learn comes after token {limit}. Shorten the prompt or raise seq_len",
                    self.opts.seq_len,
                    ids.len()
                )));
            }
            ids.truncate(limit);
            target.truncate(limit);
            self.truncated += 1;
        }
        Ok(Example::new(ids, target))
    }

    fn end_with_eos(&self, ids: &mut Vec<u32>) {
        if !ids.last().is_some_and(|id| self.tok.eos_ids.contains(id)) {
            ids.push(self.eos);
        }
    }
}

enum LineError {
    /// This line is bad; the others may be fine.
    Bad(String),
    /// Nothing can be read (the chat template does not compile).
    Fatal(Error),
}

impl LineError {
    fn bad(e: Error) -> LineError {
        LineError::Bad(e.to_string())
    }
}

/// Check one JSONL line against `format` (or, on the first valid line, detect the format).
/// The error is the reason the line is bad.
fn parse_line(line: &str, format: Option<(Format, usize)>) -> Result<(Format, Record), String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let obj = value.as_object().ok_or_else(|| format!("expected a JSON object {{...}}, found {}", kind(&value)))?;
    let found = || {
        let keys: Vec<String> = obj.keys().map(|k| format!("\"{k}\"")).collect();
        format!("found keys [{}]", keys.join(", "))
    };
    let format = match format {
        Some((f, first)) => {
            if !f.keys().iter().any(|k| obj.contains_key(*k)) {
                return Err(format!("expected {} like line {first}, {}", f.shape(), found()));
            }
            f
        }
        None => match Format::of_object(obj) {
            Some(f) => f,
            // Half a prompt/completion pair is a missing field, not an unknown shape.
            None if obj.contains_key("chosen") || obj.contains_key("rejected") => Format::Preference,
            None if obj.contains_key("prompt") || obj.contains_key("completion") => Format::PromptCompletion,
            None => {
                return Err(format!(
                    "expected {}, {}, {} or {}, {}",
                    Format::JsonlText.shape(),
                    Format::PromptCompletion.shape(),
                    Format::Chat.shape(),
                    Format::Preference.shape(),
                    found()
                ));
            }
        },
    };
    let record = match format {
        Format::Text | Format::JsonlText => Record::Text(string_field(obj, "text")?),
        Format::PromptCompletion => Record::PromptCompletion {
            prompt: string_field(obj, "prompt")?,
            completion: string_field(obj, "completion")?,
        },
        Format::Chat => Record::Chat(messages_field(obj)?),
        Format::Preference => Record::Preference {
            prompt: string_field(obj, "prompt")?,
            chosen: string_field(obj, "chosen")?,
            rejected: string_field(obj, "rejected")?,
        },
    };
    Ok((format, record))
}

fn string_field(obj: &serde_json::Map<String, serde_json::Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::String(_)) => Err(format!("\"{key}\" is empty")),
        Some(other) => Err(format!("\"{key}\" must be a string, not {}", kind(other))),
        None => Err(format!("missing the \"{key}\" field")),
    }
}

fn messages_field(obj: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<Message>, String> {
    let list = match obj.get("messages") {
        Some(serde_json::Value::Array(list)) => list,
        Some(other) => {
            return Err(format!("\"messages\" must be an array of {{\"role\", \"content\"}}, not {}", kind(other)));
        }
        None => return Err("missing the \"messages\" field".into()),
    };
    if list.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let n = i + 1;
        let m = m
            .as_object()
            .ok_or_else(|| format!("message {n} must be an object {{\"role\", \"content\"}}, not {}", kind(m)))?;
        let role = string_field(m, "role").map_err(|e| format!("message {n}: {e}"))?;
        if !matches!(role.as_str(), "system" | "user" | "assistant") {
            return Err(format!(
                "message {n} has role \"{role}\"; the roles are \"system\", \"user\" and \"assistant\""
            ));
        }
        let content = string_field(m, "content").map_err(|e| format!("message {n}: {e}"))?;
        messages.push(Message { role, content });
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err("no \"assistant\" message: a conversation needs at least one to learn from".into());
    }
    Ok(messages)
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
    fn a_training_record_given_for_text_says_what_it_is() {
        let err = parse_texts("d.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}").unwrap_err().to_string();
        assert!(err.contains("missing the \"text\" field (a prompt/completion record") && err.contains("--valid-of"), "{err}");
        let err = parse_texts("d.jsonl", "{\"messages\": []}").unwrap_err().to_string();
        assert!(err.contains("(a chat record"), "{err}");
    }

    #[test]
    fn text_files_give_one_record_per_non_empty_line() {
        assert_eq!(parse_texts("a.txt", "one\n\n two \n").unwrap(), vec!["one", " two "]);
    }
}
