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
