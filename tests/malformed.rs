//! Every bad input gets an error that names the problem, never a panic.
//! Each case starts from a good fixture, breaks one thing, and checks the message.
//! (Malformed GGUF files have their own suite in gguf_malformed.rs.)

use flint::tokenizer::{render_chat_template, ChatSpecials, Message, Tokenizer};
use flint::ModelFiles;
use std::fs;
use std::path::Path;

mod common;
use common::fixture;

/// A scratch copy of a fixture folder.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Opens and loads the model at `path`, expecting an error whose message contains `needle`.
fn expect_error(path: &Path, needle: &str) {
    let result = ModelFiles::open(path).and_then(|files| files.load_reference().map(|_| ()));
    match result {
        Ok(()) => panic!("expected an error containing `{needle}`, but the model loaded"),
        Err(e) => assert!(e.to_string().contains(needle), "error `{e}` does not mention `{needle}`"),
    }
}

/// Edits config.json of a copy of the llama-family `name` fixture and expects `needle`.
fn config_case(name: &str, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>), needle: &str) {
    let dir = copy_of(name);
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    fs::write(&path, config.to_string()).unwrap();
    expect_error(dir.path(), needle);
}

// ---- config.json ----

#[test]
fn config_that_is_not_json() {
    let dir = copy_of("llama");
    fs::write(dir.path().join("config.json"), "{\"model_type\": \"llama\",").unwrap();
    expect_error(dir.path(), "config.json is not valid JSON");
}

#[test]
fn config_with_unknown_architecture() {
    config_case(
        "llama",
        |c| drop(c.insert("model_type".into(), "gpt_neox".into())),
        "unknown model architecture `gpt_neox`",
    );
}

#[test]
fn config_missing_a_required_field() {
    config_case("llama", |c| drop(c.remove("hidden_size")), "`hidden_size`: missing");
}

#[test]
fn config_field_of_the_wrong_type() {
    config_case(
        "llama",
        |c| drop(c.insert("num_hidden_layers".into(), "two".into())),
        "`num_hidden_layers`: expected a non-negative integer",
    );
}

#[test]
fn config_with_absurd_counts() {
    // Refused before anything is looped over or sized by them.
    config_case(
        "llama",
        |c| drop(c.insert("num_hidden_layers".into(), (1u64 << 40).into())),
        "`num_hidden_layers`: 1099511627776 is more than any model has",
    );
    config_case(
        "llama",
        |c| drop(c.insert("max_position_embeddings".into(), 0.into())),
        "`max_position_embeddings`: must be positive",
    );
}

#[test]
fn config_with_contradictory_expert_counts() {
    config_case("mixtral", |c| drop(c.insert("num_experts".into(), 4.into())), "contradicts");
}

#[test]
fn config_with_contradictory_rope_theta() {
    config_case("mixtral", |c| drop(c.insert("rope_theta".into(), 500.0.into())), "rope_theta=500 contradicts");
}

#[test]
fn config_with_more_experts_per_token_than_experts() {
    config_case(
        "mixtral",
        |c| drop(c.insert("num_experts_per_tok".into(), 9.into())),
        "`num_experts_per_tok`: 9 is not in 1..=8",
    );
}

#[test]
fn config_with_kv_heads_not_dividing_heads() {
    config_case(
        "llama",
        |c| drop(c.insert("num_key_value_heads".into(), 3.into())),
        "does not divide num_attention_heads",
    );
}

#[test]
fn config_with_unsupported_activation() {
    config_case(
        "llama",
        |c| drop(c.insert("hidden_act".into(), "gelu".into())),
        "`hidden_act`: `gelu` is not supported",
    );
}

#[test]
fn config_with_unsupported_rope_scaling() {
    config_case(
        "llama",
        |c| drop(c.insert("rope_scaling".into(), serde_json::json!({"rope_type": "yarn", "factor": 4.0}))),
        "`rope_scaling`",
    );
}

#[test]
fn config_with_dense_layer_index_out_of_range() {
    config_case(
        "qwen2_moe",
        |c| drop(c.insert("mlp_only_layers".into(), serde_json::json!([7]))),
        "layer 7 does not exist",
    );
}

#[test]
fn config_whose_shapes_disagree_with_the_weights() {
    // The checkpoint holds hidden_size 64; a config claiming 128 must not load.
    config_case(
        "llama",
        |c| drop(c.insert("intermediate_size".into(), 48.into())),
        "expected [48, 64] from the config",
    );
}

// ---- safetensors ----

#[test]
fn safetensors_truncated_in_the_data() {
    let dir = copy_of("llama");
    let path = dir.path().join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    expect_error(dir.path(), "safetensors file model.safetensors");
}

#[test]
fn safetensors_header_longer_than_the_file() {
    let dir = copy_of("llama");
    let path = dir.path().join("model.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    let lie = (bytes.len() as u64 * 2).to_le_bytes();
    bytes[..8].copy_from_slice(&lie);
    fs::write(&path, &bytes).unwrap();
    expect_error(dir.path(), "safetensors file model.safetensors");
}

#[test]
fn safetensors_empty_file() {
    let dir = copy_of("llama");
    fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    expect_error(dir.path(), "safetensors file model.safetensors");
}

/// Rewrites model.safetensors of `dir` with `tensors` changed by `edit` (name -> (dtype, shape, bytes)).
fn rewrite_safetensors(dir: &Path, edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn safetensors_missing_a_tensor() {
    let dir = copy_of("llama");
    rewrite_safetensors(dir.path(), |t| t.retain(|(n, ..)| n != "model.layers.1.self_attn.k_proj.weight"));
    expect_error(dir.path(), "missing tensor `model.layers.1.self_attn.k_proj.weight`");
}

#[test]
fn safetensors_tensor_with_a_lying_shape() {
    let dir = copy_of("llama");
    rewrite_safetensors(dir.path(), |t| {
        let entry = t.iter_mut().find(|(n, ..)| n == "model.layers.0.mlp.down_proj.weight").unwrap();
        entry.2 = vec![entry.2.iter().product::<usize>() / 16, 16];
    });
    expect_error(dir.path(), "tensor `model.layers.0.mlp.down_proj.weight`: shape");
}

#[test]
fn safetensors_tensor_of_an_unreadable_dtype() {
    let dir = copy_of("llama");
    rewrite_safetensors(dir.path(), |t| {
        let entry = t.iter_mut().find(|(n, ..)| n == "model.norm.weight").unwrap();
        entry.1 = safetensors::Dtype::I32;
    });
    expect_error(dir.path(), "tensor `model.norm.weight`: dtype I32 is not a float type");
}

#[test]
fn sharded_index_naming_a_missing_shard() {
    let dir = copy_of("qwen3_moe");
    fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    expect_error(dir.path(), "model-00002-of-00002.safetensors");
}

#[test]
fn sharded_index_escaping_the_folder() {
    let dir = copy_of("qwen3_moe");
    let path = dir.path().join("model.safetensors.index.json");
    let text =
        fs::read_to_string(&path).unwrap().replacen("model-00002-of-00002.safetensors", "../secret.safetensors", 1);
    fs::write(&path, text).unwrap();
    expect_error(dir.path(), "is not a plain file name");
}

#[test]
fn sharded_index_disagreeing_with_the_shards() {
    let dir = copy_of("qwen3_moe");
    let path = dir.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    let (name, shard) = map.iter().next().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).unwrap();
    let other =
        if shard.contains("00001") { "model-00002-of-00002.safetensors" } else { "model-00001-of-00002.safetensors" };
    map.insert(name.clone(), other.into());
    fs::write(&path, index.to_string()).unwrap();
    expect_error(dir.path(), &format!("tensor `{name}` is not in shard"));
}

// ---- GPTQ ----

#[test]
fn gptq_with_unsupported_bits() {
    config_case(
        "llama-gptq",
        |c| drop(c["quantization_config"].as_object_mut().unwrap().insert("bits".into(), 8.into())),
        "8-bit GPTQ is not supported",
    );
}

#[test]
fn gptq_with_act_order() {
    config_case(
        "llama-gptq",
        |c| drop(c["quantization_config"].as_object_mut().unwrap().insert("desc_act".into(), true.into())),
        "desc_act",
    );
}

#[test]
fn gptq_with_inconsistent_group_size() {
    config_case(
        "llama-gptq",
        |c| drop(c["quantization_config"].as_object_mut().unwrap().insert("group_size".into(), 64.into())),
        "inconsistent GPTQ shapes",
    );
}

// ---- model path, tokenizer.json, chat template ----

#[test]
fn model_path_that_does_not_exist() {
    expect_error(Path::new("/nonexistent/model"), "/nonexistent/model");
}

#[test]
fn model_folder_without_config() {
    let dir = tempfile::tempdir().unwrap();
    expect_error(dir.path(), "neither a .gguf file nor a folder with config.json");
}

#[test]
fn tokenizer_json_that_is_not_a_tokenizer() {
    let err = Tokenizer::from_hf_json(br#"{"version": "1.0", "model": {"type": "Nonsense"}}"#, None).err().unwrap();
    assert!(err.to_string().contains("tokenizer.json is not a valid tokenizer"), "{err}");
}

#[test]
fn tokenizer_json_truncated() {
    let err = Tokenizer::from_hf_json(br#"{"version": "1.0", "model": {"#, None).err().unwrap();
    assert!(err.to_string().contains("tokenizer.json is not a valid tokenizer"), "{err}");
}

#[test]
fn tokenizer_config_with_a_non_string_template() {
    let tokenizer = minimal_tokenizer_json();
    let err = Tokenizer::from_hf_json(tokenizer.as_bytes(), Some(r#"{"chat_template": 42}"#)).err().unwrap();
    assert!(err.to_string().contains("chat_template is not a string"), "{err}");
}

#[test]
fn chat_template_with_a_syntax_error() {
    let err = render_chat_template(
        "{% for m in messages %}{{ m.content }",
        &[Message::new("user", "hi")],
        true,
        ChatSpecials::default(),
        &Default::default(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().starts_with("chat template:"), "{err}");
}

#[test]
fn chat_template_that_raises() {
    let template =
        "{% if messages[0].role != 'system' %}{{ raise_exception('first message must be system') }}{% endif %}";
    let err = render_chat_template(
        template,
        &[Message::new("user", "hi")],
        true,
        ChatSpecials::default(),
        &Default::default(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("first message must be system"), "{err}");
}

fn minimal_tokenizer_json() -> String {
    serde_json::json!({
        "version": "1.0",
        "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
    })
    .to_string()
}
