//! A model given as a Hugging Face repo id: with no network (as on CI), a quick, clear error
//! and a failure exit code, never a hang or a panic.

use std::process::Command;

#[test]
fn a_repo_id_without_network_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--prompt", "hi"])
        .env("HF_HOME", cache.path())
        .env("HF_HUB_OFFLINE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // A machine with network access downloaded it: nothing to check here.
        eprintln!("huggingface.co was reachable; the download worked");
        return;
    }
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
