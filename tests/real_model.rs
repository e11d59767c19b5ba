//! The real SmolLM2-135M-Instruct Q4_1 GGUF (scripts/fetch-model.sh) on the CPU reference:
//! real text from real weights, streamed.

use flint::engine::{generate, CpuGenerator, FinishReason, GenerateOptions};
use flint::reference::ReferenceModel;
use flint::sampler::SamplingParams;
use flint::tokenizer::Message;
use flint::ModelFiles;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

mod common;

type Loaded = (ModelFiles, Arc<ReferenceModel>);

/// Loading dequantizes 135M weights; share one load across the tests of this file. `None`:
/// skipped (see `common`).
fn model() -> Option<&'static Loaded> {
    static MODEL: OnceLock<Loaded> = OnceLock::new();
    let path = common::require_real_model()?;
    Some(MODEL.get_or_init(|| {
        let files = ModelFiles::open(&path).unwrap();
        let reference = Arc::new(files.load_reference().unwrap());
        (files, reference)
    }))
}

fn greedy(
    (files, reference): &Loaded,
    prompt: &str,
    max_tokens: usize,
    stop: &[&str],
) -> (flint::Completion, Vec<String>) {
    let tokenizer = files.tokenizer.as_ref().expect("the GGUF embeds its tokenizer");
    let ids = tokenizer.encode(prompt, true).unwrap();
    let options = GenerateOptions {
        max_tokens,
        sampling: SamplingParams::default(),
        stop: stop.iter().map(|s| s.to_string()).collect(),
        stop_token_ids: files.stop_token_ids(),
    };
    let mut forward = CpuGenerator::new(reference.clone());
    let mut pieces = Vec::new();
    let completion = generate(&mut forward, tokenizer, &ids, &options, |p| {
        pieces.push(p.to_string());
        ControlFlow::Continue(())
    })
    .unwrap();
    (completion, pieces)
}

#[test]
fn the_capital_of_france_is_paris() {
    let Some(m) = model() else { return };
    let (completion, pieces) = greedy(m, "The capital of France is", 8, &[]);
    assert!(completion.text.starts_with(" Paris"), "continuation: {:?}", completion.text);
    // Streamed: the text arrived in several pieces that add up to the whole.
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(pieces.concat(), completion.text);
}

#[test]
fn chat_template_answer_ends_at_the_end_token() {
    let Some(m) = model() else { return };
    let files = &m.0;
    let tokenizer = files.tokenizer.as_ref().unwrap();
    let prompt = tokenizer
        .apply_chat_template(&[Message::new("user", "What is the capital of France? Answer in one sentence.")], true)
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let (completion, _) = greedy(m, &prompt, 40, &[]);
    assert!(completion.text.contains("Paris"), "{:?}", completion.text);
    assert_eq!(completion.finish_reason, FinishReason::Stop, "{:?}", completion.text);
    assert!(!completion.text.contains("<|im_end|>"));
}

#[test]
fn a_stop_string_cuts_the_text_before_it() {
    let Some(m) = model() else { return };
    let (full, _) = greedy(m, "The capital of France is", 12, &[]);
    // Stop at the second word of the free continuation: the text ends just before it, and
    // nothing past it was streamed.
    let word = full.text.split_whitespace().nth(1).expect("two words").to_string();
    let (stopped, pieces) = greedy(m, "The capital of France is", 12, &[word.as_str()]);
    assert_eq!(stopped.text, full.text[..full.text.find(&word).unwrap()]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(pieces.concat(), stopped.text);
}

#[test]
fn flint_run_streams_a_sensible_continuation() {
    let Some(model) = common::require_real_model() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "--model"])
        .arg(model)
        .args(["--prompt", "The capital of France is", "--max-tokens", "6"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("The capital of France is Paris"), "{text:?}");
}
