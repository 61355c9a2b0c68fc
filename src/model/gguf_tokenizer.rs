//! The tokenizer a GGUF file describes in its metadata, built as tokenizer.json and
//! tokenizer_config.json the way transformers builds them from the file: a byte-level BPE for
//! `tokenizer.ggml.model = gpt2` (with llama.cpp's pre-tokenizer types), a SentencePiece BPE
//! with byte fallback for `llama`.

use serde_json::{Value, json};

use super::gguf::{Gguf, Meta};
use crate::{Error, Result};

/// The merges the file lists (`"a b"` each), as tokenizer.json writes them; None without any.
fn file_merges(g: &Gguf) -> Option<Vec<Value>> {
    match g.get("tokenizer.ggml.merges") {
        Some(Meta::Array(a)) => Some(
            a.iter()
                .filter_map(|m| m.as_str())
                .map(|m| {
                    let (a, b) = m.split_once(' ').unwrap_or((m, ""));
                    json!([a, b])
                })
                .collect(),
        ),
        _ => None,
    }
}

/// GPT-2's byte-to-character table (bytes that print stand for themselves).
fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(&chars) {
        table[*b as usize] = char::from_u32(*c).expect("below 512");
    }
    table
}

/// The split regexes of llama.cpp's pre-tokenizer types, as transformers maps them (others use
/// GPT-2's own).
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" | "pixtral" => Some(LLAMA3),
        "qwen2" | "deepseek-r1-qwen" => Some(QWEN2),
        _ => None,
    }
}

/// The token types of `tokenizer.ggml.token_type` (llama.cpp's numbering), normal where absent.
fn token_types(g: &Gguf, n: usize) -> Vec<u64> {
    let mut types: Vec<u64> = match g.get("tokenizer.ggml.token_type") {
        Some(Meta::Array(a)) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    types.resize(n, 1);
    types
}

/// An added token of tokenizer.json.
fn added_token(id: usize, content: &str, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special})
}

/// tokenizer.json and tokenizer_config.json for the tokenizer in the metadata, as transformers
/// builds them from a GGUF file: a byte-level BPE for `tokenizer.ggml.model = gpt2`, a
/// SentencePiece BPE with byte fallback for `llama`.
pub(super) fn tokenizer_files(g: &Gguf, tokens: &[String]) -> Result<(Vec<u8>, String)> {
    let model = g.get("tokenizer.ggml.model").and_then(Meta::as_str).unwrap_or("");
    let tokenizer = match model {
        "gpt2" => byte_level_tokenizer(g, tokens)?,
        "llama" => sentencepiece_tokenizer(g, tokens)?,
        _ => {
            return Err(Error::input(format!(
                "GGUF tokenizer \"{model}\" is not supported yet; supported: gpt2 (byte-level BPE: SmolLM, Llama 3, \
                 Qwen2, GPT-2) and llama (SentencePiece BPE: Llama 2, TinyLlama, Mistral)"
            )));
        }
    };
    let name_of = |k: &str| g.get(&format!("tokenizer.ggml.{k}")).and_then(Meta::as_u64).and_then(|i| tokens.get(i as usize)).cloned();
    // transformers: a SentencePiece vocabulary that does not say otherwise gets a BOS, as llama.cpp gives it.
    let add_bos = g.get("tokenizer.ggml.add_bos_token").and_then(Meta::as_bool).unwrap_or(model == "llama");
    let mut tc = json!({ "add_bos_token": add_bos });
    for (field, k) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")] {
        if let Some(t) = name_of(k) {
            tc[field] = json!(t);
        }
    }
    if let Some(t) = g.get("tokenizer.chat_template").and_then(Meta::as_str) {
        tc["chat_template"] = json!(t);
    }
    Ok((serde_json::to_vec(&tokenizer).expect("a JSON value"), serde_json::to_string(&tc).expect("a JSON value")))
}

/// SentencePiece BPE as transformers' LlamaTokenizer builds it from a GGUF file: the pieces as
/// the file spells them, byte fallback (`<0x41>`), `▁` for spaces with one prepended to the
/// first word, merges recovered from the vocabulary and its scores (transformers'
/// `generate_merges`), the BOS added by the post-processor unless the file says not to.
fn sentencepiece_tokenizer(g: &Gguf, tokens: &[String]) -> Result<Value> {
    let scores: Vec<f64> = match g.get("tokenizer.ggml.scores") {
        Some(Meta::Array(a)) if a.len() == tokens.len() => a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
        _ => return Err(Error::input("the GGUF SentencePiece tokenizer needs tokenizer.ggml.scores, one per token")),
    };
    let mut vocab = serde_json::Map::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    // Python dicts: the last id of a repeated piece wins, in the place of its first appearance.
    let mut order: Vec<&str> = Vec::new();
    let mut score_of: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        if index.insert(t, i).is_none() {
            order.push(t);
        }
        score_of.insert(t, scores[i]);
        vocab.insert(t.clone(), json!(i));
    }
    let merges: Vec<Value> = match file_merges(g) {
        Some(merges) => merges,
        None => {
            let mut merges: Vec<(&str, &str, f64)> = Vec::new();
            for piece in &order {
                let mut local: Vec<(&str, &str, f64)> = piece
                    .char_indices()
                    .skip(1)
                    .map(|(at, _)| piece.split_at(at))
                    .filter(|(l, r)| index.contains_key(l) && index.contains_key(r))
                    .map(|(l, r)| (l, r, score_of[piece]))
                    .collect();
                local.sort_by_key(|(l, r, _)| (index[l], index[r]));
                merges.extend(local);
            }
            // Best score first, then longer pieces; a stable sort keeps ties in their order.
            let key = |m: &(&str, &str, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
            merges.sort_by(|a, b| key(b).partial_cmp(&key(a)).unwrap_or(std::cmp::Ordering::Equal));
            merges.into_iter().map(|(l, r, _)| json!([l, r])).collect()
        }
    };
    // Control tokens (and the unknown one) whole and special; user-defined ones whole, not special.
    let unk = g.get("tokenizer.ggml.unknown_token_id").and_then(Meta::as_u64).map(|u| u as usize);
    let added: Vec<Value> = tokens
        .iter()
        .zip(token_types(g, tokens.len()))
        .enumerate()
        .filter(|(i, (_, ty))| *ty == 3 || *ty == 4 || Some(*i) == unk)
        .map(|(i, (t, ty))| added_token(i, t, ty != 4))
        .collect();
    let add_bos = g.get("tokenizer.ggml.add_bos_token").and_then(Meta::as_bool).unwrap_or(true);
    let bos = g.get("tokenizer.ggml.bos_token_id").and_then(Meta::as_u64).and_then(|i| tokens.get(i as usize).map(|t| (i, t)));
    let post_processor = match bos.filter(|_| add_bos) {
        Some((id, t)) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": t, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {t: {"id": t, "ids": [id], "tokens": [t]}}}),
        None => Value::Null,
    };
    Ok(tokenizer_json(
        added,
        json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false}),
        post_processor,
        json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]}),
        json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
               "fuse_unk": true, "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges}),
    ))
}

/// A `tokenizer.json` document (the tokenizers crate's format) from its parts.
fn tokenizer_json(added: Vec<Value>, pre_tokenizer: Value, post_processor: Value, decoder: Value, model: Value) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model
    })
}

/// GPT-2's byte-level BPE from a GGUF file.
fn byte_level_tokenizer(g: &Gguf, tokens: &[String]) -> Result<Value> {
    let alphabet = byte_alphabet();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let spell = |t: &str| -> String {
        if in_alphabet(t) { t.to_string() } else { t.bytes().map(|b| alphabet[b as usize]).collect() }
    };
    let mut vocab = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(spell(t), json!(i));
    }
    let merges = file_merges(g).ok_or_else(|| Error::input("the GGUF byte-level tokenizer has no tokenizer.ggml.merges"))?;
    // Control tokens (type 3) whole and special; user-defined ones (type 4) whole, not special.
    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(token_types(g, tokens.len())).enumerate() {
        let special = ty == 3 && in_alphabet(t);
        if special || ty == 4 {
            added.push(added_token(i, t, special));
        }
    }
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let pre = g.get("tokenizer.ggml.pre").and_then(Meta::as_str).unwrap_or("default");
    let pre_tokenizer = match split_regex(pre) {
        Some(re) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false)
        ]}),
        None => byte_level(true),
    };
    Ok(tokenizer_json(
        added,
        pre_tokenizer,
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "",
               "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}),
    ))
}
