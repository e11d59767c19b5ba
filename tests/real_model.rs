//! The real SmolLM2-135M-Instruct Q4_1 GGUF (scripts/fetch-model.sh) on the CPU reference:
//! real text from real weights, streamed.

use flint::engine::{generate, CpuGenerator, FinishReason, GenerateOptions};
use flint::reference::ReferenceModel;
use flint::sampler::SamplingParams;
use flint::tokenizer::Message;
use flint::ModelFiles;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

mod common;

fn model_path() -> PathBuf {
    common::real_model().expect("these tests need the real model")
}

/// Loading dequantizes 135M weights; share one load across the tests of this file.
fn model() -> &'static (ModelFiles, Arc<ReferenceModel>) {
    static MODEL: OnceLock<(ModelFiles, Arc<ReferenceModel>)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let files = ModelFiles::open(&model_path()).unwrap();
        let reference = Arc::new(files.load_reference().unwrap());
        (files, reference)
    })
}

fn greedy(prompt: &str, max_tokens: usize, stop: &[&str]) -> (flint::Completion, Vec<String>) {
    let (files, reference) = model();
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
    let (completion, pieces) = greedy("The capital of France is", 8, &[]);
    assert!(completion.text.starts_with(" Paris"), "continuation: {:?}", completion.text);
    // Streamed: the text arrived in several pieces that add up to the whole.
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(pieces.concat(), completion.text);
}

#[test]
fn chat_template_answer_ends_at_the_end_token() {
    let (files, _) = model();
    let tokenizer = files.tokenizer.as_ref().unwrap();
    let prompt = tokenizer
        .apply_chat_template(&[Message::new("user", "What is the capital of France? Answer in one sentence.")], true)
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let (completion, _) = greedy(&prompt, 40, &[]);
    assert!(completion.text.contains("Paris"), "{:?}", completion.text);
    assert_eq!(completion.finish_reason, FinishReason::Stop, "{:?}", completion.text);
    assert!(!completion.text.contains("<|im_end|>"));
}

#[test]
fn a_stop_string_cuts_the_text_before_it() {
    let (full, _) = greedy("The capital of France is", 12, &[]);
    // Stop at the second word of the free continuation: the text ends just before it, and
    // nothing past it was streamed.
    let word = full.text.split_whitespace().nth(1).expect("two words").to_string();
    let (stopped, pieces) = greedy("The capital of France is", 12, &[word.as_str()]);
    assert_eq!(stopped.text, full.text[..full.text.find(&word).unwrap()]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(pieces.concat(), stopped.text);
}

#[test]
fn flint_run_streams_a_sensible_continuation() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "--model"])
        .arg(model_path())
        .args(["--prompt", "The capital of France is", "--max-tokens", "6"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("The capital of France is Paris"), "{text:?}");
}
