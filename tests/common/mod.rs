//! Paths shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

/// A committed fixture model folder under tests/fixtures/models.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

/// A committed reference file under tests/fixtures.
pub fn fixture_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// The real SmolLM2 GGUF: `FLINT_MODEL_GGUF`, else the fetch script's cache path. Absent is a
/// failure that says how to fetch it, unless `FLINT_SKIP_REAL_MODEL=1` (then `None`).
pub fn real_model() -> Option<PathBuf> {
    let path = match std::env::var_os("FLINT_MODEL_GGUF") {
        Some(p) => PathBuf::from(p),
        None => flint::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("FLINT_SKIP_REAL_MODEL").as_deref() == Ok("1") {
        eprintln!("FLINT_SKIP_REAL_MODEL=1: skipping the real-model test ({} is absent)", path.display());
        return None;
    }
    panic!(
        "the real model {} is absent: run scripts/fetch-model.sh, or point FLINT_MODEL_GGUF at it, \
         or set FLINT_SKIP_REAL_MODEL=1 to skip",
        path.display()
    );
}

/// A fixture's `reference.json`: transformers' logits for `tokens`, and a greedy continuation.
#[derive(serde::Deserialize)]
pub struct Reference {
    pub tokens: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
    pub greedy_prompt: Vec<u32>,
    pub greedy: Vec<u32>,
}

impl Reference {
    pub fn of(fixture_dir: &Path) -> Reference {
        let text = std::fs::read_to_string(fixture_dir.join("reference.json")).expect("reference.json");
        serde_json::from_str(&text).expect("reference.json parses")
    }
}

/// Largest |a - b| over all positions, relative to the largest |b|.
pub fn relative_error(ours: &[Vec<f32>], theirs: &[Vec<f32>]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    ours.iter().flatten().zip(theirs.iter().flatten()).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// One `#[test]` per committed fixture model, each calling `$check(name)`.
#[macro_export]
macro_rules! test_every_fixture {
    ($check:ident) => {
        $crate::test_every_fixture!($check;
            llama => "llama", mixtral => "mixtral", qwen2_moe => "qwen2_moe",
            qwen2_moe_norm => "qwen2_moe_norm", qwen3_moe => "qwen3_moe", olmoe => "olmoe",
            granitemoe => "granitemoe",
            llama_q4_0 => "llama-q4_0", mixtral_q4_0 => "mixtral-q4_0", qwen2_moe_q4_0 => "qwen2_moe-q4_0",
            qwen2_moe_norm_q4_0 => "qwen2_moe_norm-q4_0", qwen3_moe_q4_0 => "qwen3_moe-q4_0",
            olmoe_q4_0 => "olmoe-q4_0", granitemoe_q4_0 => "granitemoe-q4_0",
            llama_gptq => "llama-gptq", mixtral_gptq => "mixtral-gptq", qwen2_moe_gptq => "qwen2_moe-gptq",
            qwen2_moe_norm_gptq => "qwen2_moe_norm-gptq", qwen3_moe_gptq => "qwen3_moe-gptq",
            olmoe_gptq => "olmoe-gptq", granitemoe_gptq => "granitemoe-gptq");
    };
    ($check:ident; $($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            $check($name);
        }
    )*};
}
pub mod python;
pub mod server;
