//! The model's tokenizer (`tokenizer.json`, via the `tokenizers` crate with the same regex
//! engine natively and in wasm, so token ids agree) and its special tokens.

use crate::{Error, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    /// Generation stops at any of these.
    pub eos_ids: Vec<u32>,
    /// The Jinja chat template from tokenizer_config.json's `"chat_template"`, when it has one.
    /// Some checkpoints store a list of named templates; we take the one named "default".
    pub chat_template: Option<String>,
}

fn ids_of(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
        _ => vec![],
    }
}

/// A special token in tokenizer_config.json is a string or `{"content": ...}`.
fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

/// `"chat_template"` is a string, or a list of `{"name", "template"}` (tool-use variants beside
/// the "default" one; we only render plain conversations).
fn chat_template_of(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(String::from)),
        _ => None,
    }
}

/// A `TemplateProcessing` post-processor must define every special token its templates name:
/// the tokenizers crate checks that when a template is built, not when one is read from JSON, and
/// then panics while encoding. (Found by the property tests.) Nested `Sequence` processors are
/// walked too.
fn check_templates(processor: Option<&serde_json::Value>) -> Result<()> {
    let Some(p) = processor.filter(|p| !p.is_null()) else { return Ok(()) };
    match p.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => {
            for inner in p.get("processors").and_then(|v| v.as_array()).into_iter().flatten() {
                check_templates(Some(inner))?;
            }
        }
        Some("TemplateProcessing") => {
            let defined = p.get("special_tokens").and_then(|m| m.as_object());
            let named = ["single", "pair"]
                .iter()
                .filter_map(|k| p.get(*k).and_then(|v| v.as_array()))
                .flatten()
                .filter_map(|piece| piece.get("SpecialToken")?.get("id")?.as_str());
            for id in named {
                if !defined.is_some_and(|m| m.contains_key(id)) {
                    return Err(Error::input(format!(
                        "tokenizer.json's post_processor template uses the special token {id:?}, which its special_tokens do not define"
                    )));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

impl Tokenizer {
    /// `vocab_size` comes from config.json: the tokenizer may be smaller (padded embeddings) but
    /// never larger.
    pub fn from_files(
        tokenizer_json: Option<&[u8]>,
        tokenizer_config: Option<&str>,
        generation_config: Option<&str>,
        model_config: &serde_json::Value,
        vocab_size: usize,
    ) -> Result<Tokenizer> {
        let bytes = tokenizer_json.ok_or_else(|| {
            Error::input("tokenizer.json is missing: the model folder needs it next to config.json")
        })?;
        // The tokenizers crate panics (rather than failing) on some malformed JSON inside the
        // decoder section, so the syntax is checked here first. (Found by fuzzing.)
        let json = serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| Error::input(format!("tokenizer.json is not valid JSON: {e}")))?;
        check_templates(json.get("post_processor"))?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::input(format!("tokenizer.json could not be read: {e}")))?;
        let n = inner.get_vocab_size(true);
        if n > vocab_size {
            return Err(Error::input(format!(
                "tokenizer.json has {n} tokens but config.json says vocab_size {vocab_size}: they belong to different models"
            )));
        }
        // Ids need not be dense (added tokens may sit anywhere): the largest must still fit the
        // embedding table, or encoding some text would index past it.
        if let Some((token, id)) = inner.get_vocab(true).into_iter().max_by_key(|(_, id)| *id) {
            if id as usize >= vocab_size {
                return Err(Error::input(format!(
                    "tokenizer.json gives the token {token:?} the id {id}, past config.json's vocab_size {vocab_size}: they belong to different models"
                )));
            }
        }
        let parse = |name: &str, text: Option<&str>| -> Result<Option<serde_json::Value>> {
            text.map(|t| serde_json::from_str(t).map_err(|e| Error::input(format!("{name} is not valid JSON: {e}"))))
                .transpose()
        };
        let gen_cfg = parse("generation_config.json", generation_config)?;
        let tok_cfg = parse("tokenizer_config.json", tokenizer_config)?;
        // generation_config.json wins, then config.json, then the token names in tokenizer_config.json.
        let from = |key: &str| -> Vec<u32> {
            let mut ids = ids_of(gen_cfg.as_ref().and_then(|g| g.get(key)));
            if ids.is_empty() {
                ids = ids_of(model_config.get(key));
            }
            if ids.is_empty() {
                let name = key.trim_end_matches("_id");
                if let Some(text) = token_text(tok_cfg.as_ref().and_then(|t| t.get(name))) {
                    ids.extend(inner.token_to_id(&text));
                }
            }
            ids.retain(|&id| (id as usize) < vocab_size);
            ids
        };
        let bos_id = from("bos_token_id").first().copied();
        let eos_ids = from("eos_token_id");
        let chat_template = chat_template_of(tok_cfg.as_ref().and_then(|t| t.get("chat_template")));
        Ok(Tokenizer { inner, bos_id, eos_ids, chat_template })
    }

    /// Token ids, with special tokens as the tokenizer's post-processor adds them when
    /// `add_special` is set.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| Error::input(format!("could not tokenize the text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like [`Tokenizer::encode`], plus each token's byte range `(start, end)` in `text`.
    /// Tokens the post-processor adds (BOS) have an empty range.
    pub fn encode_with_offsets(&self, text: &str, add_special: bool) -> Result<(Vec<u32>, Vec<(usize, usize)>)> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| Error::input(format!("could not tokenize the text: {e}")))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// The text of the BOS token (what chat templates call `bos_token`).
    pub fn bos_token_text(&self) -> Option<String> {
        self.inner.id_to_token(self.bos_id?)
    }

    /// The text of the first EOS token (what chat templates call `eos_token`).
    pub fn eos_token_text(&self) -> Option<String> {
        self.inner.id_to_token(*self.eos_ids.first()?)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::input(format!("could not decode tokens: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// Train a byte-level BPE tokenizer (GPT-2's pre-tokenization and byte alphabet) on a text
/// file: `<s>` (id 0) is added at the start of every encoding by the post-processor, `</s>`
/// (id 1) is the end of text. Returns `tokenizer.json` bytes.
#[cfg(not(target_arch = "wasm32"))]
pub fn train_bpe(text_file: &std::path::Path, vocab_size: usize) -> Result<Vec<u8>> {
    use tokenizers::models::bpe::{BPE, BpeTrainer};
    use tokenizers::models::{ModelWrapper, TrainerWrapper};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::AddedToken;

    if vocab_size < 300 {
        return Err(Error::input(format!("a byte-level BPE needs a vocabulary of at least 300 (256 bytes + merges), not {vocab_size}")));
    }
    let specials = vec![AddedToken::from("<s>", true), AddedToken::from("</s>", true)];
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tok = tokenizers::Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let file = text_file.to_str().ok_or_else(|| Error::input("the data path is not UTF-8"))?.to_string();
    tok.train_from_files(&mut trainer, vec![file])
        .map_err(|e| Error::input(format!("training the tokenizer on {} failed: {e}", text_file.display())))?;
    let bos = tok.token_to_id("<s>").ok_or_else(|| Error::input("tokenizer training lost <s>"))?;
    let template = TemplateProcessing::builder()
        .try_single("<s> $0")
        .and_then(|b| b.try_pair("<s> $A $B"))
        .map_err(|e| Error::input(format!("tokenizer template: {e}")))?
        .special_tokens(vec![("<s>", bos)])
        .build()
        .map_err(|e| Error::input(format!("tokenizer template: {e}")))?;
    tok.with_post_processor(Some(template));
    tok.to_string(true)
        .map(String::into_bytes)
        .map_err(|e| Error::input(format!("could not serialise the tokenizer: {e}")))
}

#[cfg(test)]
mod template_tests {
    use super::*;

    /// A post-processor template naming a special token its table lacks used to panic inside the
    /// tokenizers crate at the first encode; it is now refused when the tokenizer is read.
    #[test]
    fn a_template_naming_an_undefined_special_token_is_refused_not_a_panic() {
        let base: serde_json::Value =
            serde_json::from_slice(&std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-llama/tokenizer.json")).unwrap()).unwrap();
        let with = |special: serde_json::Value| {
            let mut json = base.clone();
            json["post_processor"] = serde_json::json!({
                "type": "Sequence",
                "processors": [{
                    "type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": special,
                }],
            });
            let bytes = serde_json::to_vec(&json).unwrap();
            Tokenizer::from_files(Some(&bytes), None, None, &serde_json::json!({}), 100_000).map(|t| t.encode("hello", true).map(|ids| ids.len()))
        };
        let err = with(serde_json::json!({"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}})).unwrap_err().to_string();
        assert!(err.contains("\"<s>\"") && err.contains("do not define"), "{err}");
        let ok = with(serde_json::json!({"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}));
        assert!(matches!(ok, Ok(Ok(n)) if n > 1), "{ok:?}");
    }
}
