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
//! Then [`split`] holds out a validation set and [`batches`] pads or packs examples into rows.

use std::path::Path;

pub use super::chat::{ChatTemplate, Message, PLAIN_CHAT_TEMPLATE};
use crate::rng::Rng;
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

// ---------------------------------------------------------------------------------------------
// Splits and batches
// ---------------------------------------------------------------------------------------------

/// Shuffle `examples` with `seed` and hold out `valid_fraction` of them: `(train, valid)`.
/// When `valid_fraction > 0` and there are at least 2 examples, `valid` gets at least 1 and
/// `train` keeps at least 1. Both come back in the shuffled order.
pub fn split(mut examples: Vec<Example>, valid_fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let mut rng = Rng::new(seed);
    // Fisher–Yates; the modulo bias is below 2^-40 for any data that fits in memory.
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        examples.swap(i, j);
    }
    let n_valid =
        if valid_fraction > 0.0 && n >= 2 { ((n as f64 * valid_fraction).round() as usize).clamp(1, n - 1) } else { 0 };
    let valid = examples.split_off(n - n_valid);
    (examples, valid)
}

/// Rows for the model, `batch_size` rows a batch (the last batch may have fewer).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[B][T]` inputs.
    pub ids: Vec<Vec<u32>>,
    /// `[B][T]` the next token after each input.
    pub targets: Vec<Vec<u32>>,
    /// `[B][T]` 1 where the target counts in the loss, else 0.
    pub weights: Vec<Vec<f32>>,
    /// `[B][T]` true for a real token, false for padding.
    pub pad: Vec<Vec<bool>>,
}

/// Cut examples into batches of `batch_size` rows (0 is taken as 1).
///
/// - `pack = false`: each example is a row (cut to `seq_len + 1` tokens); rows are right-padded
///   with `pad_id` to the longest row of their batch, with weight 0 there.
/// - `pack = true`: all examples are concatenated into one stream and cut into rows of
///   `seq_len + 1` tokens, so no compute is spent on padding (only the last row is padded).
///   Attention crosses example boundaries: a token can see the end of the example before it.
///   The loss flags travel with the tokens; the first token of each row has nothing before it
///   in the row, so it is not predicted even when flagged.
///
/// A row of `n + 1` tokens gives `T = n` inputs `ids[..n]`, targets `ids[1..]`, and weights
/// `target[1..]`.
pub fn batches(examples: &[Example], batch_size: usize, pack: bool, seq_len: usize, pad_id: u32) -> Vec<Batch> {
    let limit = seq_len.max(1) + 1;
    let rows: Vec<(Vec<u32>, Vec<bool>)> = if pack {
        let ids: Vec<u32> = examples.iter().flat_map(|e| e.ids.iter().copied()).collect();
        let target: Vec<bool> = examples.iter().flat_map(|e| e.target.iter().copied()).collect();
        ids.chunks(limit).zip(target.chunks(limit)).map(|(i, t)| (i.to_vec(), t.to_vec())).collect()
    } else {
        examples
            .iter()
            .map(|e| {
                let n = e.ids.len().min(limit);
                (e.ids[..n].to_vec(), e.target[..n].to_vec())
            })
            .collect()
    };
    // A row of one token predicts nothing.
    let rows: Vec<_> = rows.into_iter().filter(|(ids, _)| ids.len() >= 2).collect();
    rows.chunks(batch_size.max(1)).map(|chunk| rows_batch(chunk, pad_id)).collect()
}

impl Batch {
    /// The same rows right-padded to `t` inputs each (no shorter than they are), with `pad_id`
    /// and weight 0 in the new places. The loss is the same: the added tokens come after every
    /// real one, so causal attention never lets a real token see them, and they carry no weight.
    pub fn padded_to(&self, t: usize, pad_id: u32) -> Batch {
        Batch { ids: extend(&self.ids, t, pad_id), targets: extend(&self.targets, t, pad_id), weights: extend(&self.weights, t, 0.0), pad: extend(&self.pad, t, false) }
    }
}

/// Each row extended with `fill` to `t` values (a longer row is left as it is).
fn extend<T: Copy>(rows: &[Vec<T>], t: usize, fill: T) -> Vec<Vec<T>> {
    rows.iter().map(|r| r.iter().copied().chain(std::iter::repeat_n(fill, t.saturating_sub(r.len()))).collect()).collect()
}

/// How many inputs a row of `t` is padded to on a GPU: the next multiple of [`GPU_LENGTH_STEP`],
/// but never past `context` (unless `t` already is).
///
/// A GPU backend compiles a kernel for each vector width and tiling it meets, and chooses them
/// from the shapes, the sequence length among them. Rows padded to the longest in their batch
/// change length from step to step: on lavapipe the first steps of a tiny model each compiled a
/// new set (1–3 s a step where its later steps took 0.3–0.4 s). Rounded up, a run meets a few
/// lengths, all divisible by 16, and its later steps took 0.18 s (benches/README.md, "Rows
/// padded to a multiple of 16 on a GPU").
pub fn gpu_length(t: usize, context: usize) -> usize {
    t.next_multiple_of(GPU_LENGTH_STEP).min(context.max(t))
}

/// The granularity of [`gpu_length`].
pub const GPU_LENGTH_STEP: usize = 16;

/// Rows (ids, target flags) as one batch, right-padded with `pad_id` to the longest.
pub(crate) fn rows_batch(rows: &[(Vec<u32>, Vec<bool>)], pad_id: u32) -> Batch {
    let t = rows.iter().map(|(ids, _)| ids.len() - 1).max().unwrap_or(0);
    let mut b = Batch { ids: vec![], targets: vec![], weights: vec![], pad: vec![] };
    for (ids, target) in rows {
        let n = ids.len() - 1;
        let fill = t - n;
        b.ids.push(ids[..n].iter().copied().chain(std::iter::repeat_n(pad_id, fill)).collect());
        b.targets.push(ids[1..].iter().copied().chain(std::iter::repeat_n(pad_id, fill)).collect());
        b.weights.push(
            target[1..].iter().map(|&x| if x { 1.0 } else { 0.0 }).chain(std::iter::repeat_n(0.0, fill)).collect(),
        );
        b.pad.push(std::iter::repeat_n(true, n).chain(std::iter::repeat_n(false, fill)).collect());
    }
    b
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
    fn example(ids: &[u32], target: &[bool]) -> Example {
        Example::new(ids.to_vec(), target.to_vec())
    }


    #[test]
    fn split_holds_out_the_rounded_fraction_but_at_least_one_and_never_all() {
        let ten: Vec<Example> = (0..10).map(|i| example(&[i, i], &[true, true])).collect();
        let sizes = |v: Vec<Example>, f: f64| {
            let (t, v) = split(v, f, 1);
            (t.len(), v.len())
        };
        assert_eq!(sizes(ten.clone(), 0.2), (8, 2));
        assert_eq!(sizes(ten.clone(), 0.01), (9, 1)); // 0.1 rounds to 0, raised to 1
        assert_eq!(sizes(ten.clone(), 1.0), (1, 9)); // train keeps one
        assert_eq!(sizes(ten.clone(), 0.0), (10, 0));
        assert_eq!(sizes(ten[..1].to_vec(), 0.5), (1, 0)); // one example cannot be split
        assert_eq!(sizes(vec![], 0.5), (0, 0));
    }

    #[test]
    fn split_is_a_seeded_shuffle_that_loses_nothing() {
        let ten: Vec<Example> = (0..10).map(|i| example(&[i, i], &[true, true])).collect();
        let (t, v) = split(ten.clone(), 0.3, 42);
        assert_eq!(split(ten.clone(), 0.3, 42), (t.clone(), v.clone()));
        let mut all: Vec<u32> = t.iter().chain(&v).map(|e| e.ids[0]).collect();
        assert_ne!(all, (0..10).collect::<Vec<_>>(), "seed 42 should move something");
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn unpacked_rows_are_padded_to_the_longest_in_their_batch_with_weight_zero() {
        let examples = [
            example(&[1, 2, 3, 4], &[false, false, true, true]),
            example(&[5, 6, 7, 8, 9, 10], &[true; 6]),
            example(&[11, 12, 13], &[false, true, true]),
        ];
        let b = batches(&examples, 2, false, 64, 0);
        assert_eq!(b.len(), 2);
        // Rows of 4 and 6 tokens give 3 and 5 predictions: T = 5.
        assert_eq!(b[0].ids, [vec![1, 2, 3, 0, 0], vec![5, 6, 7, 8, 9]]);
        assert_eq!(b[0].targets, [vec![2, 3, 4, 0, 0], vec![6, 7, 8, 9, 10]]);
        // weight[t] is target[t + 1]: token 2 is prompt, tokens 3 and 4 are learned.
        assert_eq!(b[0].weights, [vec![0.0, 1.0, 1.0, 0.0, 0.0], vec![1.0; 5]]);
        assert_eq!(b[0].pad, [vec![true, true, true, false, false], vec![true; 5]]);
        // The last batch has the one row left, with no padding.
        assert_eq!(b[1].ids, [vec![11, 12]]);
        assert_eq!(b[1].weights, [vec![1.0, 1.0]]);
    }

    #[test]
    fn unpacked_rows_longer_than_seq_len_plus_one_are_cut() {
        let b = batches(&[example(&[1, 2, 3, 4, 5], &[true; 5])], 4, false, 2, 0);
        assert_eq!((b[0].ids.clone(), b[0].targets.clone()), (vec![vec![1, 2]], vec![vec![2, 3]]));
    }

    #[test]
    fn packed_rows_cut_one_stream_into_seq_len_plus_one_and_keep_the_flags() {
        let examples = [
            example(&[1, 2, 3], &[false, true, true]),
            example(&[4, 5, 6, 7], &[false, false, true, true]),
            example(&[8, 9], &[false, true]),
        ];
        // Stream 1..=9 in rows of 4: [1 2 3 4] [5 6 7 8] [9] (dropped: one token predicts nothing).
        let b = batches(&examples, 8, true, 3, 0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].ids, [vec![1, 2, 3], vec![5, 6, 7]]);
        assert_eq!(b[0].targets, [vec![2, 3, 4], vec![6, 7, 8]]);
        // The flags of tokens 2 3 4 and 6 7 8: 4 starts the second example and 8 the third.
        assert_eq!(b[0].weights, [vec![1.0, 1.0, 0.0], vec![1.0, 1.0, 0.0]]);
        assert_eq!(b[0].pad, [vec![true; 3], vec![true; 3]]);
    }

    #[test]
    fn padding_a_batch_adds_weightless_hidden_tokens_after_each_row() {
        let examples = [example(&[1, 2, 3], &[false, true, true]), example(&[4, 5, 6, 7, 8], &[true; 5])];
        let b = batches(&examples, 2, false, 64, 0);
        let p = b[0].padded_to(6, 9);
        assert_eq!(p.ids, [vec![1, 2, 0, 0, 9, 9], vec![4, 5, 6, 7, 9, 9]]);
        assert_eq!(p.targets, [vec![2, 3, 0, 0, 9, 9], vec![5, 6, 7, 8, 9, 9]]);
        assert_eq!(p.weights, [vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0], vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]]);
        assert_eq!(p.pad, [vec![true, true, false, false, false, false], vec![true, true, true, true, false, false]]);
        // A length the batch already has changes nothing.
        assert_eq!(b[0].padded_to(4, 9).ids, b[0].ids);
    }

    #[test]
    fn gpu_lengths_round_up_to_the_step_but_not_past_the_context() {
        assert_eq!(gpu_length(1, 128), 16);
        assert_eq!(gpu_length(16, 128), 16);
        assert_eq!(gpu_length(17, 128), 32);
        assert_eq!(gpu_length(120, 128), 128);
        assert_eq!(gpu_length(99, 100), 100);
        assert_eq!(gpu_length(100, 100), 100);
        // A row already past the context (refused elsewhere) is not cut here.
        assert_eq!(gpu_length(130, 100), 130);
    }

    #[test]
    fn a_short_last_packed_row_is_padded() {
        let examples = [example(&[1, 2, 3, 4, 5, 6], &[true; 6])];
        let b = batches(&examples, 8, true, 3, 99);
        assert_eq!(b[0].ids, [vec![1, 2, 3], vec![5, 99, 99]]);
        assert_eq!(b[0].weights[1], [1.0, 0.0, 0.0]);
        assert_eq!(b[0].pad[1], [true, false, false]);
    }
}
