//! The tokenizer built from SmolLM2's GGUF metadata against the committed reference encodings
//! (`tests/fixtures/tokenizer/smollm2_gguf.json`, made by Python transformers).
//!
//! flint applies llama.cpp's `smollm` pre-tokenizer (each `\p{N}` split off before GPT-2's
//! regex, as the model's original `tokenizer.json` does); transformers' GGUF loader does not
//! know `smollm` and uses GPT-2's regex alone. The fixture records llama.cpp's ids as
//! `ids_digits_isolated` on the cases where the two differ (non-ASCII numerals only), and those
//! are the ids flint must give there.

use flint::format::gguf::GgufFile;
use flint::tokenizer::gguf::from_gguf;
use serde_json::Value;
mod common;

use common::require_real_model;

fn fixture() -> Value {
    let path = common::fixture_file("tokenizer/smollm2_gguf.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn smollm2_gguf_tokenizer_matches_reference() {
    let Some(path) = require_real_model() else { return };
    let fx = fixture();
    let file = GgufFile::open(&path).unwrap();
    let tok = from_gguf(&file).unwrap().expect("the file has a tokenizer");

    let specials = &fx["special_tokens"];
    assert_eq!(tok.bos_token_id, Some(specials["bos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.eos_token_id, Some(specials["eos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.add_bos, fx["add_bos_token"].as_bool().unwrap());
    assert_eq!(tok.chat_template.as_deref(), fx["chat_template"].as_str());
    assert_eq!(tok.tokenizer.get_vocab_size(true), fx["len_with_added"].as_u64().unwrap() as usize);
    for added in fx["backend"]["added_tokens"].as_array().unwrap() {
        let content = added["content"].as_str().unwrap();
        assert_eq!(tok.tokenizer.token_to_id(content), Some(added["id"].as_u64().unwrap() as u32), "{content}");
    }

    let mut failures = vec![];
    let mut digit_cases = vec![];
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let expected = match case.get("ids_digits_isolated") {
            Some(v) => {
                digit_cases.push(name.to_string());
                ids_of(v)
            }
            None => ids_of(&case["ids"]),
        };
        let ids = tok.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        if ids != expected {
            failures.push(format!("{name}: {text:?}\n  got      {ids:?}\n  expected {expected:?}"));
            continue;
        }
        if case.get("ids_digits_isolated").is_none() {
            let tokens: Vec<String> = ids.iter().map(|&i| tok.tokenizer.id_to_token(i).unwrap()).collect();
            let want: Vec<&str> = case["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            if tokens != want {
                failures.push(format!("{name}: tokens {tokens:?} != {want:?}"));
            }
        }
        // Decoding the reference ids, with and without special tokens.
        let ref_ids = ids_of(&case["ids"]);
        let decoded = tok.tokenizer.decode(&ref_ids, false).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            failures.push(format!("{name}: decoded {decoded:?} != {:?}", case["decoded"]));
        }
        let skipped = tok.tokenizer.decode(&ref_ids, true).unwrap();
        if skipped != case["decoded_skip_special"].as_str().unwrap() {
            failures.push(format!("{name}: decoded (skip special) {skipped:?} != {:?}", case["decoded_skip_special"]));
        }
    }
    for chat in fx["chats"].as_array().unwrap() {
        let name = chat["name"].as_str().unwrap();
        let ids = tok.tokenizer.encode(chat["text"].as_str().unwrap(), false).unwrap().get_ids().to_vec();
        if ids != ids_of(&chat["ids"]) {
            failures.push(format!("chat {name}: got {ids:?}\n  expected {:?}", ids_of(&chat["ids"])));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    // Only the non-ASCII numerals case differs from transformers' GPT-2-regex ids.
    assert_eq!(digit_cases, ["unicode_numbers"]);
}
