//! The training data pipeline on real tokenizers: each format's ids and loss targets, chat
//! parity with transformers' `apply_chat_template`, line-numbered errors, splits and batches.
//!
//! Ids below are the tiny-llama tokenizer's: `<s>` 510, `</s>` 511, "The" 271, " The" 278,
//! " cat" 444, " sat" 373, "." 13, "Q" 48, ":" 25, "\n" 198, " In" 468, " the" 258, " kitchen" 465.

use std::path::{Path, PathBuf};

use tinytune::model::Tokenizer;
use tinytune::train::batch::split;
use tinytune::train::data::{ChatTemplate, DataOptions, Dataset, Format, Message, OnBadLine, load_dataset};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The tokenizer of a fixture model, with `tokenizer_config.json` replaced when given.
fn tokenizer_with(name: &str, tokenizer_config: Option<&str>) -> Tokenizer {
    let dir = fixture(name);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let config: serde_json::Value = serde_json::from_str(&read("config.json").unwrap()).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    let tokenizer_config = tokenizer_config.map(String::from).or_else(|| read("tokenizer_config.json"));
    Tokenizer::from_files(
        Some(&std::fs::read(dir.join("tokenizer.json")).unwrap()),
        tokenizer_config.as_deref(),
        read("generation_config.json").as_deref(),
        &config,
        vocab,
    )
    .unwrap()
}

fn llama() -> Tokenizer {
    tokenizer_with("tiny-llama", None)
}

fn opts(seq_len: usize) -> DataOptions {
    DataOptions { seq_len, train_on_prompt: false, on_bad_line: OnBadLine::Stop }
}

fn load(name: &str, contents: &str, tok: &Tokenizer, opts: &DataOptions) -> Dataset {
    match load_dataset(name, contents, tok, opts) {
        Ok(d) => d,
        Err(e) => panic!("{name} should load: {e}"),
    }
}

fn load_error(contents: &str) -> String {
    match load_dataset("d.jsonl", contents, &llama(), &opts(64)) {
        Ok(d) => panic!("loaded {} examples but should have failed", d.examples.len()),
        Err(e) => e.to_string(),
    }
}

/// A `{"messages"}` line from (role, content) pairs.
fn chat(turns: &[(&str, &str)]) -> String {
    let messages: Vec<_> =
        turns.iter().map(|(role, content)| serde_json::json!({"role": role, "content": content})).collect();
    serde_json::json!({ "messages": messages }).to_string()
}

/// The ids whose token is learned.
fn learned(ids: &[u32], target: &[bool]) -> Vec<u32> {
    ids.iter().zip(target).filter(|(_, t)| **t).map(|(id, _)| *id).collect()
}

fn reference_chat() -> (Vec<Message>, bool, String, Vec<u32>) {
    let text = std::fs::read_to_string(fixture("tiny-llama/reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let chat = &reference["chat"];
    (
        serde_json::from_value(chat["messages"].clone()).unwrap(),
        chat["add_generation_prompt"].as_bool().unwrap(),
        chat["text"].as_str().unwrap().to_string(),
        serde_json::from_value(chat["ids"].clone()).unwrap(),
    )
}

// --- formats ---

#[test]
fn a_text_file_is_one_stream_cut_into_windows_of_seq_len_plus_one() {
    let data = load("corpus.txt", "The cat sat.", &llama(), &opts(2));
    assert_eq!(data.format, Format::Text);
    // <s> The cat sat . </s> = 6 tokens, in windows of 3 that do not overlap.
    assert_eq!(data.examples.len(), 2);
    assert_eq!(data.examples[0].ids, [510, 271, 444]);
    assert_eq!(data.examples[1].ids, [373, 13, 511]);
    assert!(data.examples.iter().all(|e| e.target.iter().all(|&t| t)));
    assert_eq!(data.truncated, 0);
}

#[test]
fn a_leftover_single_token_window_is_dropped_because_it_predicts_nothing() {
    // 6 tokens in windows of 5: the 6th (</s>) would be a window of its own.
    let data = load("corpus.txt", "The cat sat.", &llama(), &opts(4));
    assert_eq!(data.examples.len(), 1);
    assert_eq!(data.examples[0].ids, [510, 271, 444, 373, 13]);
}

#[test]
fn a_jsonl_text_line_is_one_example_ending_in_eos_with_every_token_learned() {
    let data = load("d.jsonl", "{\"text\": \"The cat sat.\"}\n\n{\"text\": \"The cat.\"}\n", &llama(), &opts(64));
    assert_eq!(data.format, Format::JsonlText);
    assert_eq!(data.examples[0].ids, [510, 271, 444, 373, 13, 511]);
    assert_eq!(data.examples[0].target, [true; 6]);
    assert_eq!(data.examples[1].ids, [510, 271, 444, 13, 511]);
}

#[test]
fn a_line_longer_than_seq_len_plus_one_is_cut_and_counted() {
    let data = load("d.jsonl", "{\"text\": \"The cat sat.\"}\n{\"text\": \"The\"}", &llama(), &opts(3));
    assert_eq!(data.examples[0].ids, [510, 271, 444, 373]);
    assert_eq!(data.examples[1].ids, [510, 271, 511]);
    assert_eq!(data.truncated, 1);
}

#[test]
fn text_that_already_ends_in_eos_gets_no_second_one() {
    let data = load("d.jsonl", "{\"text\": \"The cat.</s>\"}", &llama(), &opts(64));
    assert_eq!(data.examples[0].ids, [510, 271, 444, 13, 511]);
}

#[test]
fn prompt_completion_learns_only_the_completion_and_eos() {
    let line = "{\"prompt\": \"Q:\", \"completion\": \" cat sat.\"}";
    let data = load("d.jsonl", line, &llama(), &opts(64));
    assert_eq!(data.format, Format::PromptCompletion);
    // Prompt with BOS, completion without, then EOS; no separator between them.
    assert_eq!(data.examples[0].ids, [510, 48, 25, 444, 373, 13, 511]);
    assert_eq!(data.examples[0].target, [false, false, false, true, true, true, true]);
}

#[test]
fn prompt_tokens_are_learned_too_with_train_on_prompt() {
    let line = "{\"prompt\": \"Q:\", \"completion\": \" cat sat.\"}";
    let data = load("d.jsonl", line, &llama(), &DataOptions { train_on_prompt: true, ..opts(64) });
    assert_eq!(data.examples[0].target, [true; 7]);
}

#[test]
fn a_prompt_that_fills_seq_len_leaves_nothing_to_learn_and_is_a_bad_line() {
    // Q : + 3 completion tokens + </s>: with seq_len 2 the kept 3 tokens are all prompt.
    let line = "{\"prompt\": \"Q:\", \"completion\": \" cat sat.\"}";
    let err = load_dataset("d.jsonl", line, &llama(), &opts(2)).unwrap_err().to_string();
    assert!(err.contains("d.jsonl line 1: nothing to learn within seq_len 2"), "{err}");
}

// --- chat ---

#[test]
fn chat_renders_the_models_template_to_the_ids_transformers_gives() {
    let (messages, add_generation_prompt, text, ids) = reference_chat();
    let tok = llama();
    let template = ChatTemplate::new(&tok).unwrap();
    assert!(template.is_models_own());
    assert_eq!(template.render(&messages, add_generation_prompt).unwrap(), text);
    assert_eq!(template.encode(&tok, &messages, add_generation_prompt).unwrap(), ids);
}

/// A model whose tokenizer_config.json has `template` as its chat template.
fn llama_with_template(template: &str) -> Tokenizer {
    let config = serde_json::json!({ "bos_token": "<s>", "eos_token": "</s>", "chat_template": template });
    tokenizer_with("tiny-llama", Some(&config.to_string()))
}

fn messages(turns: &[(&str, &str)]) -> Vec<Message> {
    turns.iter().map(|(role, content)| Message { role: role.to_string(), content: content.to_string() }).collect()
}

#[test]
fn chat_templates_render_as_jinja2_renders_them_for_transformers() {
    // Zephyr's template relies on trim_blocks and lstrip_blocks for its newlines; Mistral's on
    // `{%-`, namespace(), .strip() and raise_exception. Expected texts are jinja2 3.1.6's, in the
    // environment transformers' apply_chat_template builds (trim_blocks, lstrip_blocks, loopcontrols).
    let zephyr = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n\
                  {% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n\
                  {% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
    let template = ChatTemplate::new(&llama_with_template(zephyr)).unwrap();
    let conversation = messages(&[("user", "Q"), ("assistant", "A"), ("user", "Q2"), ("assistant", "A2")]);
    assert_eq!(
        template.render(&conversation, true).unwrap(),
        "<|user|>\nQ</s>\n<|assistant|>\nA</s>\n<|user|>\nQ2</s>\n<|assistant|>\nA2</s>\n<|assistant|>\n"
    );

    let mistral = "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    \
                   {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\
                   {%- set ns = namespace(n=0) %}\n{{- bos_token }}\n{%- for message in loop_messages %}\n    \
                   {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        \
                   {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    \
                   {%- if message['role'] == 'user' %}\n        {%- if loop.last and system_message is defined %}\n            \
                   {{- '[INST] ' + system_message + '\\n\\n' + message['content'].strip() + '[/INST]' }}\n        {%- else %}\n            \
                   {{- '[INST] ' + message['content'] + '[/INST]' }}\n        {%- endif %}\n    \
                   {%- elif message['role'] == 'assistant' %}\n        {%- set ns.n = ns.n + 1 %}\n        \
                   {{- ' ' + message['content'] + eos_token}}\n    {%- endif %}\n{%- endfor %}\n";
    let template = ChatTemplate::new(&llama_with_template(mistral)).unwrap();
    let conversation = messages(&[
        ("system", " Be brief. "),
        ("user", "Where is the cup?"),
        ("assistant", " In the kitchen.\n"),
        ("user", "And the cat?"),
    ]);
    assert_eq!(
        template.render(&conversation, false).unwrap(),
        "<s>[INST] Where is the cup?[/INST]  In the kitchen.\n</s>[INST]  Be brief. \n\nAnd the cat?[/INST]"
    );
    let err = template.render(&messages(&[("assistant", "A")]), false).unwrap_err().to_string();
    assert!(err.contains("Conversation roles must alternate"), "{err}");
}

#[test]
fn generation_tags_are_accepted_and_a_role_header_is_not_learned() {
    let tok = llama_with_template(
        "{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + eos_token }}\
         {% endgeneration %}{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}",
    );
    let example = &load("chat.jsonl", &chat(&[("user", "Q"), ("assistant", "The cat.")]), &tok, &opts(64)).examples[0];
    // " The cat." after "assistant:" (the template has no generation prompt, yet its role header
    // is not learned), and the </s> the template writes.
    assert_eq!(learned(&example.ids, &example.target), [278, 444, 13, 511]);
}

#[test]
fn chat_learns_the_assistant_turn_and_its_eos_and_nothing_else() {
    let (messages, _, _, reference_ids) = reference_chat();
    let line = serde_json::json!({ "messages": messages }).to_string();
    let data = load("chat.jsonl", &line, &llama(), &opts(64));
    assert_eq!(data.format, Format::Chat);
    let example = &data.examples[0];
    // The reference ends with the generation prompt "assistant: " (25, 220); without it the
    // conversation ends "?\n" (30, 198), and EOS is appended, not learned after a user turn.
    let n = reference_ids.len() - 10;
    assert_eq!(example.ids[..n], reference_ids[..n]);
    assert_eq!(example.ids.last(), Some(&511));
    // " In the kitchen." (468 258 465 13) and the template's </s>; not the "\n" after it.
    assert_eq!(learned(&example.ids, &example.target), [468, 258, 465, 13, 511]);
}

#[test]
fn a_conversation_ending_with_the_assistant_ends_at_the_templates_eos() {
    let line = chat(&[("user", "Where is the cup?"), ("assistant", "In the kitchen.")]);
    let example = &load("chat.jsonl", &line, &llama(), &opts(64)).examples[0];
    // The template writes "</s>\n"; the trailing newline is dropped instead of adding a second </s>.
    assert_eq!(example.ids[example.ids.len() - 5..], [468, 258, 465, 13, 511]);
    assert_eq!(example.target[example.ids.len() - 5..], [true; 5]);
}

#[test]
fn every_assistant_turn_of_a_conversation_is_learned() {
    let line = chat(&[
        ("system", "Be brief."),
        ("user", "Q"),
        ("assistant", "The cat."),
        ("user", "Q"),
        ("assistant", "The cat sat."),
    ]);
    let example = &load("chat.jsonl", &line, &llama(), &opts(128)).examples[0];
    // Each turn starts " The" after "assistant:", which tokenizes differently from "The".
    let tok = llama();
    let turn = |s: &str| tok.encode(&format!(" {s}"), false).unwrap();
    let mut expected = turn("The cat.");
    expected.push(511);
    expected.extend(turn("The cat sat."));
    expected.push(511);
    assert_eq!(learned(&example.ids, &example.target), expected);
}

#[test]
fn train_on_prompt_learns_the_whole_conversation() {
    let line = chat(&[("user", "Q"), ("assistant", "The cat.")]);
    let example = &load("chat.jsonl", &line, &llama(), &DataOptions { train_on_prompt: true, ..opts(64) }).examples[0];
    assert!(example.target.iter().all(|&t| t));
}

#[test]
fn without_a_chat_template_the_plain_one_is_used_and_bos_follows_the_tokenizer() {
    let line = chat(&[("user", "hi"), ("assistant", "Hello")]);
    // GPT-2 adds no BOS to text, so the plain template's text starts with "<|user|>".
    let gpt2 = tokenizer_with("tiny-gpt2", None);
    assert_eq!(gpt2.chat_template, None);
    let example = &load("chat.jsonl", &line, &gpt2, &opts(64)).examples[0];
    let expected = gpt2.encode("<|user|>\nhi\n<|assistant|>\nHello<|endoftext|>", false).unwrap();
    assert_eq!(example.ids, expected);
    let mut hello = gpt2.encode("Hello", false).unwrap();
    hello.push(511);
    assert_eq!(learned(&example.ids, &example.target), hello);

    // Llama adds <s> to text, so it starts the plain template's text too.
    let mut llama = llama();
    llama.chat_template = None;
    let example = &load("chat.jsonl", &line, &llama, &opts(64)).examples[0];
    assert_eq!(example.ids, llama.encode("<|user|>\nhi\n<|assistant|>\nHello</s>", true).unwrap());
    assert_eq!(example.ids[0], 510);
}

#[test]
fn a_list_of_named_chat_templates_gives_the_default_one() {
    let config = r#"{"bos_token": "<s>", "eos_token": "</s>", "chat_template": [
        {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ messages[0]['content'] }}"}]}"#;
    let tok = tokenizer_with("tiny-llama", Some(config));
    assert_eq!(tok.chat_template.as_deref(), Some("{{ messages[0]['content'] }}"));
}

#[test]
fn a_template_that_rewrites_earlier_turns_still_finds_the_assistants_tokens() {
    // Earlier assistant turns are bracketed, the last is not, so rendering prefixes of the
    // conversation does not reproduce the full text; the content is searched for instead.
    let template = "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[{{ m.content }}]\
                    {% else %}{{ m.content }}{% endif %}{{ '\\n' }}{% endfor %}";
    let config = serde_json::json!({ "bos_token": "<s>", "eos_token": "</s>", "chat_template": template });
    let tok = tokenizer_with("tiny-llama", Some(&config.to_string()));
    let line = chat(&[("user", "Q"), ("assistant", "The cat."), ("user", "Q"), ("assistant", "The cat sat.")]);
    let example = &load("chat.jsonl", &line, &tok, &opts(64)).examples[0];
    let mut expected = tok.encode("The cat.", false).unwrap();
    expected.extend(tok.encode("The cat sat.", false).unwrap());
    // The last turn's "\n" belongs to the span the prefixes found ("The cat sat.\n"), then </s>.
    expected.extend([198, 511]);
    assert_eq!(learned(&example.ids, &example.target), expected);
}

#[test]
fn a_template_that_raises_an_exception_makes_a_bad_line_with_its_message() {
    let template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}\
                    {% for m in messages %}{{ m['content'] }}{% endfor %}";
    let config = serde_json::json!({ "bos_token": "<s>", "eos_token": "</s>", "chat_template": template });
    let tok = tokenizer_with("tiny-llama", Some(&config.to_string()));
    let line = chat(&[("assistant", "The cat.")]);
    let err = load_dataset("chat.jsonl", &line, &tok, &opts(64)).unwrap_err().to_string();
    assert!(
        err.contains("chat.jsonl line 1: the chat template refused it: Conversations must start with the user"),
        "{err}"
    );
}

#[test]
fn a_chat_template_that_is_not_jinja_is_an_error_naming_the_template() {
    let config = r#"{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for m in messages %}"}"#;
    let tok = tokenizer_with("tiny-llama", Some(config));
    let line = chat(&[("assistant", "The cat.")]);
    let err = load_dataset("chat.jsonl", &line, &tok, &DataOptions { on_bad_line: OnBadLine::Skip, ..opts(64) })
        .unwrap_err()
        .to_string();
    assert!(err.contains("chat template (tokenizer_config.json \"chat_template\") could not be read"), "{err}");
}

// --- bad lines ---

#[test]
fn a_line_that_is_not_json_is_named_by_its_number_and_says_how_to_go_on() {
    let err = load_error("{\"text\": \"a\"}\n\n{oops\n");
    assert!(err.contains("d.jsonl line 3: not valid JSON"), "{err}");
    assert!(err.ends_with("Fix the line or pass --skip-bad-lines"), "{err}");
}

#[test]
fn a_line_that_is_not_an_object_is_a_bad_line() {
    let err = load_error("[1, 2]");
    assert!(err.contains("line 1: expected a JSON object {...}, found an array"), "{err}");
}

#[test]
fn a_missing_field_is_named() {
    let err = load_error("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}");
    assert!(err.contains("line 2: missing the \"completion\" field"), "{err}");
    let err = load_error("{\"prompt\": \"a\"}");
    assert!(err.contains("line 1: missing the \"completion\" field"), "{err}");
}

#[test]
fn a_line_shaped_unlike_the_first_is_a_bad_line() {
    let err = load_error("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"text\": \"c\", \"id\": 7}");
    assert!(
        err.contains(r#"line 2: expected {"prompt", "completion"} like line 1, found keys ["id", "text"]"#),
        "{err}"
    );
    let err = load_error("{\"txt\": \"a\"}");
    assert!(
        err.contains(r#"line 1: expected {"text"}, {"prompt", "completion"}, {"messages"} or {"prompt", "chosen", "rejected"}, found keys ["txt"]"#),
        "{err}"
    );
}

#[test]
fn a_field_of_the_wrong_type_is_a_bad_line() {
    let err = load_error("{\"text\": 3}");
    assert!(err.contains("line 1: \"text\" must be a string, not a number"), "{err}");
    let err = load_error("{\"messages\": \"hi\"}");
    assert!(err.contains("line 1: \"messages\" must be an array of {\"role\", \"content\"}, not a string"), "{err}");
    let err = load_error(r#"{"messages": [{"role": "user", "content": ["hi"]}]}"#);
    assert!(err.contains("line 1: message 1: \"content\" must be a string, not an array"), "{err}");
}

#[test]
fn an_empty_string_or_conversation_is_a_bad_line() {
    assert!(load_error("{\"text\": \"\"}").contains("line 1: \"text\" is empty"));
    assert!(load_error("{\"prompt\": \"\", \"completion\": \"b\"}").contains("line 1: \"prompt\" is empty"));
    assert!(load_error("{\"messages\": []}").contains("line 1: \"messages\" is empty"));
    let err = load_error(&chat(&[("user", "hi"), ("assistant", "")]));
    assert!(err.contains("line 1: message 2: \"content\" is empty"), "{err}");
}

#[test]
fn a_role_other_than_system_user_or_assistant_is_a_bad_line() {
    let err = load_error(&chat(&[("user", "hi"), ("tool", "42")]));
    assert!(err.contains("line 1: message 2 has role \"tool\""), "{err}");
}

#[test]
fn a_conversation_without_an_assistant_message_is_a_bad_line() {
    let err = load_error(&chat(&[("user", "hi")]));
    assert!(err.contains("line 1: no \"assistant\" message"), "{err}");
}

#[test]
fn skip_mode_keeps_the_good_lines_and_lists_the_bad_ones() {
    let contents = "{\"text\": \"The cat.\"}\n{oops\n\n{\"text\": 3}\n{\"text\": \"The cat sat.\"}\n";
    let data = load("d.jsonl", contents, &llama(), &DataOptions { on_bad_line: OnBadLine::Skip, ..opts(64) });
    assert_eq!(data.examples.len(), 2);
    assert_eq!(data.skipped.len(), 2);
    assert_eq!((data.skipped[0].line, data.skipped[1].line), (2, 4));
    assert!(data.skipped[1].reason.contains("must be a string"), "{}", data.skipped[1].reason);
}

#[test]
fn a_bad_first_line_in_skip_mode_lets_the_next_line_set_the_format() {
    let contents = "{oops\n{\"prompt\": \"Q:\", \"completion\": \" cat\"}\n";
    let data = load("d.jsonl", contents, &llama(), &DataOptions { on_bad_line: OnBadLine::Skip, ..opts(64) });
    assert_eq!(data.format, Format::PromptCompletion);
    assert_eq!(data.skipped[0].line, 1);
}

#[test]
fn a_file_with_no_examples_is_an_error() {
    let skip = DataOptions { on_bad_line: OnBadLine::Skip, ..opts(64) };
    let err = load_dataset("d.jsonl", "{oops\n{\"text\": 1}\n", &llama(), &skip).unwrap_err().to_string();
    assert!(
        err.contains("d.jsonl has no examples to train on: all 2 lines were bad, the first is line 1: not valid JSON"),
        "{err}"
    );
    let err = load_dataset("d.jsonl", "\n\n", &llama(), &opts(64)).unwrap_err().to_string();
    assert!(err.contains("d.jsonl has no examples"), "{err}");
    let err = load_dataset("empty.txt", " \n", &llama(), &opts(64)).unwrap_err().to_string();
    assert!(err.contains("empty.txt is empty"), "{err}");
}

#[test]
fn an_unknown_extension_is_an_error_that_names_the_formats() {
    let err = load_dataset("d.csv", "a,b", &llama(), &opts(64)).unwrap_err().to_string();
    assert!(err.contains("d.csv: unknown data format. Use .txt"), "{err}");
}

// --- the real corpus ---

#[test]
fn the_fixture_corpus_loads_as_text_and_as_jsonl() {
    let tok = llama();
    let train = std::fs::read_to_string(fixture("corpus/train.txt")).unwrap();
    let data = load("train.txt", &train, &tok, &opts(64));
    assert!(data.examples.len() > 100);
    assert!(data.examples.iter().all(|e| e.ids.len() <= 65));
    let eval = std::fs::read_to_string(fixture("corpus/eval.jsonl")).unwrap();
    let data = load("eval.jsonl", &eval, &tok, &opts(64));
    assert_eq!((data.format, data.examples.len()), (Format::JsonlText, 8));
}

#[test]
fn splitting_the_corpus_is_the_same_for_the_same_seed() {
    let train = std::fs::read_to_string(fixture("corpus/train.txt")).unwrap();
    let data = load("train.txt", &train, &llama(), &opts(64));
    let n = data.examples.len();
    let (t1, v1) = split(data.examples.clone(), 0.1, 7);
    let (t2, v2) = split(data.examples.clone(), 0.1, 7);
    assert_eq!((t1.len() + v1.len(), v1.len()), (n, (n as f64 * 0.1).round() as usize));
    assert_eq!((&t1, &v1), (&t2, &v2));
    let (_, v3) = split(data.examples, 0.1, 8);
    assert_ne!(v1, v3);
}

/// A SentencePiece-style (Metaspace) tokenizer: "▁" marks a word's leading space.
fn metaspace() -> Tokenizer {
    let bytes = std::fs::read(fixture("edge/metaspace/tokenizer.json")).unwrap();
    Tokenizer::from_files(Some(&bytes), None, None, &serde_json::json!({"bos_token_id": 0, "eos_token_id": 1}), 12).unwrap()
}

#[test]
fn prompt_completion_is_tokenized_as_one_text_so_a_sentencepiece_completion_gets_no_stray_space_token() {
    // "The answer is" + " Paris": as one text "▁The ▁answer ▁is ▁Paris"; tokenized apart, the
    // completion would start with a lone "▁" (id 7) the model never sees at inference.
    let tok = metaspace();
    let line = "{\"prompt\": \"The answer is\", \"completion\": \" Paris\"}";
    let data = load("d.jsonl", line, &tok, &opts(64));
    assert_eq!(data.examples[0].ids, [0, 3, 4, 5, 6, 1]);
    assert_eq!(data.examples[0].target, [false, false, false, false, true, true]);
    assert_eq!(tok.encode("The answer is Paris", true).unwrap(), [0, 3, 4, 5, 6]);
}

#[test]
fn a_completion_token_straddling_the_seam_is_learned() {
    // GPT-2 style BPE merges across the seam when the prompt ends mid-word: "Q" + "ueen" may be
    // one token; its text reaches past the prompt, so it is part of the completion.
    let tok = llama();
    let line = "{\"prompt\": \"The ca\", \"completion\": \"t sat.\"}";
    let data = load("d.jsonl", line, &tok, &opts(64));
    let whole = tok.encode("The cat sat.", true).unwrap();
    assert_eq!(&data.examples[0].ids[..whole.len()], whole.as_slice());
    let (_, offsets) = tok.encode_with_offsets("The cat sat.", true).unwrap();
    for (i, (_, end)) in offsets.iter().enumerate() {
        assert_eq!(data.examples[0].target[i], *end > "The ca".len(), "token {i}");
    }
}

#[test]
fn a_json_file_is_an_array_of_the_same_records_as_jsonl() {
    let tok = llama();
    let array = "[{\"prompt\": \"Q:\", \"completion\": \" cat sat.\"}, {\"prompt\": \"Q:\", \"completion\": \" dog.\"}]";
    let lines = "{\"prompt\": \"Q:\", \"completion\": \" cat sat.\"}\n{\"prompt\": \"Q:\", \"completion\": \" dog.\"}";
    let (a, b) = (load("d.json", array, &tok, &opts(64)), load("d.jsonl", lines, &tok, &opts(64)));
    assert_eq!(a.examples.len(), 2);
    assert_eq!(a.examples.iter().map(|e| &e.ids).collect::<Vec<_>>(), b.examples.iter().map(|e| &e.ids).collect::<Vec<_>>());
    let err = load_dataset("d.json", "{\"text\": \"not an array\"}", &tok, &opts(64)).unwrap_err().to_string();
    assert!(err.contains("JSON array"), "{err}");
}

#[test]
fn streaming_decode_keeps_sentencepiece_spaces_and_equals_decoding_everything() {
    let tok = metaspace();
    let prompt = tok.encode("The answer", true).unwrap();
    let mut stream = tinytune::generate::StreamDecoder::new(&prompt);
    let mut text = String::new();
    for id in [5, 6, 8, 9, 10, 11] {
        text += &stream.push(&tok, id).unwrap();
    }
    // Decoding the new tokens alone would drop the first "▁": "is Paris…".
    assert_eq!(text, " is Paris capital of France?");
    let all: Vec<u32> = prompt.iter().copied().chain([5, 6, 8, 9, 10, 11]).collect();
    assert_eq!(format!("{}{text}", tok.decode(&prompt).unwrap()), tok.decode(&all).unwrap());
}

#[test]
fn a_chat_template_that_never_ends_or_writes_without_bound_is_stopped_with_a_clear_error() {
    let conversation = messages(&[("user", "Q")]);
    // A loop that, for all practical purposes, never ends, and writes nothing (range is capped
    // per call, so it is nested).
    let endless = "{% set ns = namespace(n=0) %}{% for a in range(100000) %}{% for b in range(100000) %}{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}";
    let err = ChatTemplate::new(&llama_with_template(endless)).unwrap().render(&conversation, true).unwrap_err();
    assert!(err.to_string().contains("steps of work"), "{err}");
    // Few instructions, a huge text: one repeat of 50 MB.
    let huge = "{{ 'x' * 50000000 }}";
    let err = ChatTemplate::new(&llama_with_template(huge)).unwrap().render(&conversation, true).unwrap_err();
    assert!(err.to_string().contains("KiB for one conversation"), "{err}");
    // The limits leave real templates alone: a long conversation still renders.
    let long: Vec<(&str, &str)> = (0..500).map(|i| if i % 2 == 0 { ("user", "a question of some length") } else { ("assistant", "an answer") }).collect();
    let plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
    let text = ChatTemplate::new(&llama_with_template(plain)).unwrap().render(&messages(&long), false).unwrap();
    assert_eq!(text.lines().count(), 500);
}
