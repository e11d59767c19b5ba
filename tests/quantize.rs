//! `flint quantize`: the written GPTQ checkpoint loads in flint as exactly the matrices of
//! on-the-fly GPTQ-grid quantization (so the logits are equal), and loads in transformers
//! (dequantized with the GPTQ formula) with logits within 1e-3 of flint's.

mod common;

use flint::reference::{KvCache, ReferenceModel};
use flint::ModelFiles;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Families whose fixtures store one linear per expert (what GPTQ checkpoints hold).
const FIXTURES: [&str; 5] = ["llama", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];
const GROUP: usize = 32;

fn quantize(model: &Path, out: &Path, group: usize) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["quantize", "--model"])
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(["--group", &group.to_string(), "--json"])
        .output()
        .unwrap()
}

fn logits(files: &ModelFiles, weights: flint::weights::model::ModelWeights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let model = ReferenceModel::new(files.config.clone(), flint::reference::Weights::from_packed(&weights));
    model.forward(&mut KvCache::new(&files.config), tokens).unwrap()
}

#[test]
fn quantized_checkpoints_equal_on_the_fly_quantization_and_load_in_transformers() {
    let scratch = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for name in FIXTURES {
        let source = common::fixture(name);
        let out = scratch.path().join(name);
        let run = quantize(&source, &out, GROUP);
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert!(summary["quantized_linears"].as_u64().unwrap() > 0, "{name}: {summary}");

        let written = ModelFiles::open(&out).unwrap();
        assert!(written.format.starts_with("GPTQ 4-bit, group 32"), "{name}: {}", written.format);
        let from_file = written.load_weights().unwrap();
        let original = ModelFiles::open(&source).unwrap();
        let mut on_the_fly = original.load_weights().unwrap();
        on_the_fly.quantize_gptq(GROUP).unwrap();
        // Bit-identical packed matrices (values and scales), so the same logits on any engine.
        assert!(from_file == on_the_fly, "{name}: the written checkpoint differs from on-the-fly quantization");
        let tokens = common::Reference::of(&source).tokens[..16].to_vec();
        let ours = logits(&written, from_file, &tokens);
        assert_eq!(ours, logits(&original, on_the_fly, &tokens), "{name}");
        cases.push(serde_json::json!({ "dir": out, "tokens": tokens, "logits": ours }));
    }

    let Some(python) = common::require_python() else { return };
    let cases_path = scratch.path().join("cases.json");
    std::fs::write(&cases_path, serde_json::to_vec(&cases).unwrap()).unwrap();
    let run = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gptq_transformers.py"))
        .arg(&cases_path)
        .output()
        .unwrap();
    assert!(run.status.success(), "gptq_transformers.py: {}", String::from_utf8_lossy(&run.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(results.len(), FIXTURES.len());
    for r in &results {
        eprintln!("{r}");
        // Both sides compute in f32 from the same dequantized values (d * (q - z) is exact in
        // f32), so they differ only by summation order: ~1e-6 on logits of magnitude ~1-10.
        // 1e-3 is the bound the issue sets; a wrong nibble, zero point or transpose moves
        // logits by far more.
        assert!(r["max_abs_diff"].as_f64().unwrap() <= 1e-3, "{r}");
    }
}

#[test]
fn inputs_it_cannot_quantize_get_clear_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let cases: [(PathBuf, &str); 3] = [
        (common::fixture("llama-q4_0").join("model.gguf"), "Hugging Face folders"),
        (common::fixture("llama-gptq"), "already quantized"),
        (common::fixture("granitemoe"), "fused or stacked"),
    ];
    for (i, (model, expected)) in cases.iter().enumerate() {
        let run = quantize(model, &scratch.path().join(i.to_string()), GROUP);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{}: {stderr}", model.display());
        assert!(stderr.contains(expected), "{}: {stderr}", model.display());
    }
    // An output folder that already holds files is never overwritten.
    let taken = scratch.path().join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), "mine").unwrap();
    let run = quantize(&common::fixture("llama"), &taken, GROUP);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("not empty"));
    // A group size GPTQ kernels do not take is refused by the argument parser (exit 2).
    assert_eq!(quantize(&common::fixture("llama"), &scratch.path().join("g"), 48).status.code(), Some(2));
}
