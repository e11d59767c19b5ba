//! Paths shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

/// A committed fixture model folder under tests/fixtures/models.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

/// What `ModelFiles::open` takes for fixture `name`: its `model.gguf` where it has one, else
/// the folder.
pub fn fixture_model(name: &str) -> PathBuf {
    let dir = fixture(name);
    let gguf = dir.join("model.gguf");
    if gguf.exists() {
        gguf
    } else {
        dir
    }
}

/// One GPU device per test binary, shared by its tests.
pub fn shared_gpu() -> std::sync::Arc<flint::gpu::Gpu> {
    static GPU: std::sync::OnceLock<std::sync::Arc<flint::gpu::Gpu>> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = flint::gpu::Gpu::new_blocking(flint::gpu::Backend::Auto).unwrap_or_else(|e| panic!("{e}"));
        std::sync::Arc::new(gpu)
    })
    .clone()
}

/// A committed reference file under tests/fixtures.
pub fn fixture_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// The one rule for an asset the repository does not hold (the real model, the Python venv).
/// With `skip_var` set (to anything but "" or "0") every test that needs the asset prints
/// `SKIPPED: ...` and returns `None`, whether or not the asset is there, so one variable turns
/// all of them off alike. Otherwise the asset must be there: absent is a failure saying how to
/// get it, never a quiet pass.
#[track_caller]
fn require(skip_var: &str, what: &str, path: PathBuf, how: &str) -> Option<PathBuf> {
    if std::env::var_os(skip_var).is_some_and(|v| !v.is_empty() && v != "0") {
        skipped(&format!("{skip_var} is set, so the checks that need {what} do not run"));
        return None;
    }
    assert!(path.is_file(), "{what} is absent ({}): {how}; or set {skip_var}=1 to skip these tests", path.display());
    Some(path)
}

/// Says on stderr, past the test harness's output capture (it catches only `eprintln!`), that
/// this test checked nothing, so a skip shows in `cargo test`'s output and is never taken for a pass.
pub fn skipped(reason: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let line = format!("SKIPPED: {}: {reason}\n", thread.name().unwrap_or("?"));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The real SmolLM2 GGUF: `FLINT_MODEL_GGUF`, else the fetch script's cache path; `None` (skip)
/// when `FLINT_SKIP_REAL_MODEL` is set.
#[track_caller]
pub fn require_real_model() -> Option<PathBuf> {
    let path = match std::env::var_os("FLINT_MODEL_GGUF") {
        Some(p) => PathBuf::from(p),
        None => flint::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    require(
        "FLINT_SKIP_REAL_MODEL",
        "the real model",
        path,
        "run scripts/fetch-model.sh (it honours FLINT_CACHE), or point FLINT_MODEL_GGUF at the .gguf",
    )
}

/// The venv's Python with `openai`, torch and transformers: `FLINT_PYTHON`, else
/// `$FLINT_CACHE/venv/bin/python`; `None` (skip) when `FLINT_SKIP_PYTHON` is set.
#[track_caller]
pub fn require_python() -> Option<PathBuf> {
    let path =
        std::env::var_os("FLINT_PYTHON").map_or_else(|| flint::cache_dir().join("venv/bin/python"), PathBuf::from);
    require(
        "FLINT_SKIP_PYTHON",
        "the Python venv",
        path,
        "run scripts/test.sh (it makes the venv from tests/requirements.txt), or point FLINT_PYTHON at a python with them",
    )
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
            olmoe_gptq => "olmoe-gptq", granitemoe_gptq => "granitemoe-gptq",
            deepseek_v2 => "deepseek_v2", deepseek_v3 => "deepseek_v3",
            deepseek_v2_q4_0 => "deepseek_v2-q4_0", deepseek_v3_q4_0 => "deepseek_v3-q4_0",
            deepseek_v2_q4_0_kvb => "deepseek_v2-q4_0-kvb",
            deepseek_v2_gptq => "deepseek_v2-gptq", deepseek_v3_gptq => "deepseek_v3-gptq");
    };
    ($check:ident; $($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            $check($name);
        }
    )*};
}
pub mod server;
