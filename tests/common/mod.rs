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
