//! A model given as a Hugging Face repo id: with no network (as on CI), a quick, clear error
//! and a failure exit code, never a hang or a panic; with network, the download lands in the
//! hub cache and runs.

use std::process::Command;

#[test]
fn a_repo_id_is_downloaded_or_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--prompt", "hi"])
        .env("HF_HOME", cache.path())
        .env("HF_HUB_OFFLINE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // huggingface.co was reachable: the files are in this test's hub cache, and they ran.
        let snapshots = cache.path().join("hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots");
        let snapshot = std::fs::read_dir(&snapshots)
            .unwrap_or_else(|e| panic!("no snapshot in {}: {e}", snapshots.display()))
            .next()
            .expect("one snapshot")
            .unwrap()
            .path();
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            assert!(snapshot.join(file).is_file(), "{file} missing from {}", snapshot.display());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("hi") && stdout.trim_end().len() > 2, "no continuation: {stdout:?}");
        return;
    }
    // Offline: a clear error naming the repo and how to do without the network.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HuggingFaceTB/SmolLM2-135M-Instruct"), "{stderr}");
    assert!(stderr.contains("huggingface.co"), "{stderr}");
    assert!(stderr.contains("pass a local model"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_path_is_not_mistaken_for_a_repo_id() {
    let out = Command::new(env!("CARGO_BIN_EXE_flint")).args(["info", "--model", "./no/such-model"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no such file or folder") && !stderr.contains("huggingface"), "{stderr}");
}
