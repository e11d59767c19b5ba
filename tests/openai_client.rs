//! The official `openai` Python package against `flint serve`: chat (non-streaming and
//! streaming) and completions give exactly the text `flint run` gives with the same prompt,
//! seed and settings, and the usage counts match.
//!
//! The package lives in a venv that scripts/test.sh makes: `FLINT_PYTHON`, else
//! `$FLINT_CACHE/venv/bin/python` (`~/.cache/flint/venv`).

mod common;

use common::server::Server;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `flint run`'s generated text (what it prints after the prompt, without its final newline).
fn flint_run(model: &Path, args: &[&str], prompt: &str, chat: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flint"));
    cmd.arg("run").arg("--model").arg(model).args(["--prompt", prompt]).args(args);
    if chat {
        cmd.arg("--chat");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "flint run: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.strip_suffix('\n').unwrap();
    match chat {
        true => text.to_string(),
        false => text.strip_prefix(prompt).unwrap().to_string(),
    }
}

#[test]
fn the_openai_package_gets_flint_runs_text() {
    let (Some(model), Some(python)) = (common::require_real_model(), common::require_python()) else { return };
    let server = Server::start(&model, &[]);
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py"))
        .arg(server.url("/v1"))
        .arg(&server.model)
        .output()
        .unwrap();
    assert!(out.status.success(), "openai_client.py: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{got:#}");

    let system = "You are a helpful assistant who answers briefly.";
    let user = "Suggest a name for a pet turtle.";
    let sampled = flint_run(
        &model,
        &["--system", system, "--temperature", "0.4", "--max-tokens", "24", "--seed", "7"],
        user,
        true,
    );
    let greedy = flint_run(&model, &["--system", system, "--max-tokens", "16"], user, true);
    let completion = flint_run(
        &model,
        &["--temperature", "0.4", "--top-p", "0.9", "--max-tokens", "16", "--seed", "11"],
        "The three primary colors are",
        false,
    );
    assert!(!sampled.is_empty() && !completion.is_empty());
    assert_eq!(got["chat"]["text"], sampled.as_str());
    assert_eq!(got["chat"]["role"], "assistant");
    assert_eq!(got["chat_stream"]["text"], sampled.as_str());
    assert_eq!(got["chat_stream"]["usage"], got["chat"]["usage"]);
    assert_eq!(got["chat_stream"]["finish"], got["chat"]["finish"]);
    assert_eq!(got["chat_greedy"]["text"], greedy.as_str());
    assert_eq!(got["completion"]["text"], completion.as_str());
    assert_eq!(got["completion_stream"]["text"], completion.as_str());
    assert_eq!(got["models"], serde_json::json!([server.model]));
    assert_eq!(got["unknown_model"]["status"], 404, "{}", got["unknown_model"]);

    // Usage counted exactly: the prompt's tokens as flint encodes them; the completion's
    // count is max_tokens when the finish reason is length.
    let files = flint::ModelFiles::open(&model).unwrap();
    let tokenizer = files.tokenizer.as_ref().unwrap();
    let prompt_ids = tokenizer.encode("The three primary colors are", true).unwrap();
    let usage = &got["completion"]["usage"];
    assert_eq!(usage["prompt_tokens"], prompt_ids.len());
    if got["completion"]["finish"] == "length" {
        assert_eq!(usage["completion_tokens"], 16);
    }
    let messages = [flint::tokenizer::Message::new("system", system), flint::tokenizer::Message::new("user", user)];
    let chat_ids = tokenizer.encode(&tokenizer.apply_chat_template(&messages, true).unwrap(), true).unwrap();
    assert_eq!(got["chat"]["usage"]["prompt_tokens"], chat_ids.len());
}
