//! `flint bench --json` end to end on a small preset, and `flint info --preset`.

use std::process::Command;

fn flint(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flint")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn bench_json_carries_the_figures_and_checks_them() {
    let (ok, out, err) = flint(&[
        "bench",
        "--preset",
        "muse-spark-pair-64e",
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "4",
        "--ctx",
        "64",
        "--json",
    ]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let num = |k: &str| j[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {out}"));
    for key in ["load_s", "prefill_tok_s", "ttft_ms", "decode_tok_s", "copy_gbps", "read_gbps", "roofline_fraction"] {
        assert!(num(key) > 0.0, "{key} = {}", num(key));
    }
    // The plan leaves out only the ops' parameter uniforms (KB against 0.19 GB).
    assert!(num("plan_error").abs() < 0.02, "plan error {}", num("plan_error"));
    assert!(num("peak_gpu_bytes") >= num("allocated_gpu_bytes"));
    // What the kernels read per token is the active parameters' bytes (5%).
    assert!((num("weight_bytes_per_token") / num("active_matrix_bytes") - 1.0).abs() < 0.05);
    // Pipelined decode: one readback per token (a 4-byte id), no other wait.
    assert_eq!(num("host_waits_per_token"), 1.0);
    // Decode ops of 8 layers plus the sampler.
    assert!(num("dispatches_per_token") > 8.0 * 10.0);
}

#[test]
fn info_preset_prints_the_plan_and_names_bad_presets() {
    let (ok, out, err) = flint(&["info", "--preset", "muse-spark-15b", "--json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total = j["memory_total_bytes"].as_u64().unwrap();
    // The budget: weights + a 4096-token KV cache + scratch at or below 9 GB.
    assert!(total <= 9_000_000_000, "{total}");
    assert_eq!(j["memory_plan"]["max_ctx"], 4096);
    let (ok, _, err) = flint(&["info", "--preset", "muse-spark-16b"]);
    assert!(!ok && err.contains("muse-spark-15b"), "{err}");
    let (ok, _, err) = flint(&["bench", "--preset", "muse-spark-pair-64e", "--ctx", "16"]);
    assert!(!ok && err.contains("--ctx"), "{err}");
    // DeepSeek-V2-Lite's shape fits the class's 9 GB too, its MLA cache included.
    let (ok, out, err) = flint(&["info", "--preset", "deepseek-v2-lite", "--json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(j["memory_total_bytes"].as_u64().unwrap() <= 9_000_000_000, "{out}");
}

#[test]
fn bench_without_ctx_fits_a_model_of_short_context() {
    // The fixture holds 128 positions: --ctx defaults to that rather than 4096.
    let gguf = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/deepseek_v3-q4_0/model.gguf");
    let (ok, out, err) = flint(&["bench", "--model", gguf, "--prompt-tokens", "8", "--gen-tokens", "4", "--json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["ctx"], 128, "{out}");
    assert!(j["decode_tok_s"].as_f64().unwrap() > 0.0);
}
