//! Chat templates: rendering `{"messages": [...]}` records with the model's Jinja chat template
//! (minijinja, configured as Hugging Face's jinja2 environment) or a plain documented one, and
//! finding the spans of assistant turns. Split out of `data.rs`, which re-exports it.

use crate::model::Tokenizer;
use crate::{Error, Result};


/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// The template for tokenizers without one. Each message is `<|role|>`, a newline, the content
/// and a newline; assistant turns end with the EOS token before that newline, so the model
/// learns to stop. The generation prompt is `<|assistant|>` and a newline:
///
/// ```text
/// <|user|>
/// Where is the cup?
/// <|assistant|>
/// In the kitchen.</s>
/// ```
///
/// `<|user|>` and the like are plain text, not special tokens. The rendered text is tokenized
/// like any other text, so BOS is there exactly when the tokenizer adds it to text.
pub const PLAIN_CHAT_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|' + message['role'] + '|>\\n' + message['content'] }}\
{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// A chat template ready to render: the tokenizer's own or [`PLAIN_CHAT_TEMPLATE`].
///
/// The tokenizer's template is rendered as transformers' `apply_chat_template` renders it:
/// jinja2 with `trim_blocks` and `lstrip_blocks`, loop controls, `raise_exception`, the
/// variables `messages`, `add_generation_prompt`, `bos_token` and `eos_token`, and the result
/// tokenized without adding special tokens (the template writes BOS itself when the model wants
/// it). Python string methods (`.strip()`, `.startswith()`) come from minijinja's pycompat.
/// Not provided: `strftime_now` (templates that use it test `is defined` and fall back to a
/// fixed date, which keeps training data reproducible) and `tools`/`documents`.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
    /// The tokenizer's own template (true) or the plain one.
    own: bool,
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    pub fn new(tok: &Tokenizer) -> Result<ChatTemplate> {
        let own = tok.chat_template.is_some();
        let source = match &tok.chat_template {
            Some(t) => without_generation_tags(t),
            None => PLAIN_CHAT_TEMPLATE.to_string(),
        };
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // A template comes with the model, so it is untrusted: bound its work (a loop without
        // end runs out of fuel) as well as its output (below).
        env.set_fuel(Some(crate::limits::TEMPLATE_FUEL));
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, source).map_err(|e| {
            Error::input(format!(
                "the model's chat template (tokenizer_config.json \"chat_template\") could not be read: {e}. \
                 Fix the template, or delete it to use tinytune's plain template"
            ))
        })?;
        Ok(ChatTemplate {
            env,
            bos: tok.bos_token_text().unwrap_or_default(),
            eos: tok.eos_token_text().unwrap_or_default(),
            own,
        })
    }

    /// Whether this is the tokenizer's own template (otherwise [`PLAIN_CHAT_TEMPLATE`]).
    pub fn is_models_own(&self) -> bool {
        self.own
    }

    /// The conversation as text; with `add_generation_prompt`, followed by what starts an
    /// assistant turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_str(messages, add_generation_prompt)
            .map_err(|e| Error::input(format!("could not render the conversation: {e}")))
    }

    /// The conversation's token ids, as transformers' `apply_chat_template(tokenize=True)` gives them.
    pub fn encode(&self, tok: &Tokenizer, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<u32>> {
        tok.encode(&self.render(messages, add_generation_prompt)?, !self.own)
    }

    fn render_str(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| e.to_string())?;
        let mut out = Capped(Vec::new());
        template
            .render_captured_to(
                minijinja::context! {
                    messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                    add_generation_prompt => add_generation_prompt,
                    bos_token => self.bos.as_str(),
                    eos_token => self.eos.as_str(),
                },
                &mut out,
            )
            .map(drop)
            .map_err(|e| match e.kind() {
                minijinja::ErrorKind::InvalidOperation => {
                    format!("the chat template refused it: {}", e.detail().unwrap_or("no reason given"))
                }
                minijinja::ErrorKind::OutOfFuel => format!(
                    "the chat template did more than {} steps of work without finishing: does it loop without end?",
                    crate::limits::TEMPLATE_FUEL
                ),
                minijinja::ErrorKind::WriteFailure => format!(
                    "the chat template wrote more than {} KiB for one conversation: is it the model's real template?",
                    crate::limits::TEMPLATE_OUTPUT >> 10
                ),
                _ => format!("the chat template failed: {e}"),
            })?;
        String::from_utf8(out.0).map_err(|_| "the chat template wrote text that is not UTF-8".to_string())
    }

    /// Ids and loss targets for one conversation: the assistant's turns (content, and the
    /// end-of-turn token after it when the template writes one), or everything with
    /// `train_on_prompt`. The error is why the conversation cannot be used.
    pub(super) fn example(
        &self,
        tok: &Tokenizer,
        messages: &[Message],
        train_on_prompt: bool,
    ) -> Result<(Vec<u32>, Vec<bool>), String> {
        let text = self.render_str(messages, false)?;
        let (mut ids, offsets) = tok.encode_with_offsets(&text, !self.own).map_err(|e| e.to_string())?;
        let is_eos = |id: &u32| tok.eos_ids.contains(id);
        let mut target = vec![train_on_prompt; ids.len()];
        if !train_on_prompt {
            for (start, end) in self.assistant_spans(messages, &text)? {
                // A token is the assistant's if any of its bytes are: the token that straddles
                // the seam (" In" after "assistant:") is the first thing the model must say.
                let inside =
                    |&(a, b): &(usize, usize)| if a == b { start <= a && a < end } else { a < end && b > start };
                let mut next = None;
                let mut ended = false;
                for (k, off) in offsets.iter().enumerate() {
                    if inside(off) {
                        target[k] = true;
                        next = Some(k + 1);
                        // Stop at the end-of-turn token: what follows it (a newline before the
                        // next turn) is the template's, not the model's to say.
                        if is_eos(&ids[k]) {
                            ended = true;
                            break;
                        }
                    }
                }
                // When the span is only the content, the EOS right after it still ends the turn.
                if let Some(k) = next.filter(|_| !ended)
                    && ids.get(k).is_some_and(is_eos)
                {
                    target[k] = true;
                }
            }
        }
        // The appended EOS (by the caller) must not double one the template wrote before
        // trailing whitespace ("...</s>\n").
        let last_word = (0..ids.len()).rev().find(|&k| {
            let (a, b) = offsets[k];
            a == b || !text[a..b].trim().is_empty()
        });
        if let Some(k) = last_word.filter(|&k| is_eos(&ids[k]) && k + 1 < ids.len()) {
            ids.truncate(k + 1);
            target.truncate(k + 1);
        }
        Ok((ids, target))
    }

    /// Byte ranges of the rendered `text` that are the assistant's turns. A turn starts where
    /// its content starts: the conversation up to it, rendered with a marker as its content, is
    /// a prefix of `text` up to the marker. (Not where the generation prompt ends: some templates
    /// ignore `add_generation_prompt`, and then the role header would be learned.) It stops
    /// where the conversation rendered through it ends, which takes in the end-of-turn markup.
    /// Templates that render a turn differently once more messages follow (dropping earlier
    /// reasoning, say) break this; then the turn is found by searching for its content.
    fn assistant_spans(&self, messages: &[Message], text: &str) -> Result<Vec<(usize, usize)>, String> {
        // A private-use character does not occur in real text or in template markup.
        const MARK: &str = "\u{F8FF}tinytune-content\u{F8FF}";
        let mut spans = vec![];
        let mut cursor = 0;
        for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
            let mut marked = messages[..=i].to_vec();
            marked[i].content = MARK.to_string();
            let start = self
                .render_str(&marked, false)
                .ok()
                .and_then(|r| r.find(MARK).filter(|&at| text.starts_with(&r[..at])));
            let end =
                self.render_str(&messages[..=i], false).ok().filter(|r| text.starts_with(r.as_str())).map(|r| r.len());
            if let (Some(start), Some(end)) = (start, end)
                && cursor <= start
                && start < end
            {
                spans.push((start, end));
                cursor = end;
                continue;
            }
            let content = m.content.trim();
            let at = Some(content).filter(|c| !c.is_empty()).and_then(|c| text[cursor..].find(c)).map(|at| cursor + at);
            let at = at.ok_or_else(|| {
                format!(
                    "the chat template changes the text of message {} (assistant), so which tokens are the \
                     assistant's cannot be found; pass --train-on-prompt to learn the whole conversation",
                    i + 1
                )
            })?;
            spans.push((at, at + content.len()));
            cursor = at + content.len();
        }
        Ok(spans)
    }
}

/// transformers' `{% generation %}…{% endgeneration %}` marks the assistant's text for its own
/// masking; it is not Jinja. Rewritten to `{% if true %}…{% endif %}`, it keeps its
/// whitespace control (`{%-`, `-%}`) and renders the same.
fn without_generation_tags(src: &str) -> String {
    if !src.contains("endgeneration") {
        return src.to_string();
    }
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(open) = rest.find("{%") {
        // The closing "%}" comes after the opening "{%" ("{%}" is not a closed tag).
        let Some(close) = rest[open + 2..].find("%}").map(|c| open + 2 + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 2..close];
        // At most one whitespace-control sign on each side.
        let (left, inner) = match inner.strip_prefix(['-', '+']) {
            Some(body) => (&inner[..1], body),
            None => ("", inner),
        };
        let (body, right) = match inner.strip_suffix(['-', '+']) {
            Some(body) => (body, &inner[body.len()..]),
            None => (inner, ""),
        };
        match body.trim() {
            "generation" => out.push_str(&format!("{{%{left} if true {right}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{left} endif {right}%}}")),
            _ => out.push_str(&rest[open..close + 2]),
        }
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

/// A buffer that refuses to grow past [`crate::limits::TEMPLATE_OUTPUT`] bytes.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > crate::limits::TEMPLATE_OUTPUT {
            return Err(std::io::Error::other("the rendered text is over its limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_ifs_that_keep_their_whitespace_control() {
        let src = "{% for m in messages %}{%- generation -%} {{ m.content }} {%+ endgeneration %}{% endfor %}";
        assert_eq!(
            without_generation_tags(src),
            "{% for m in messages %}{%- if true -%} {{ m.content }} {%+ endif %}{% endfor %}"
        );
        assert_eq!(without_generation_tags("{% if x %}a{% endif %}"), "{% if x %}a{% endif %}");
        // A "{%}" whose "%}" overlaps its "{%" (found by fuzzing) is left as it is.
        assert_eq!(without_generation_tags("{%}{% generation %}x{% endgeneration %}"), "{%}{% generation %}x{% endif %}");
    }
}
