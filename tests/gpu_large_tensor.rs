//! A weight larger than one storage binding (128 MiB on lavapipe) is split across bindings and
//! gives the same logits as the CPU reference: a synthetic dense model whose vocabulary of
//! 300,000 makes the f32 embedding and output matrices 146 MiB each.

use flint::config::{Family, FfnKind, ModelConfig, QkNorm, RopePairing};
use flint::gpu::kernels::KvFormat;
use flint::gpu::model::GpuModel;
use flint::gpu::{Backend, Gpu};
use flint::quant::packed::PackedMatrix;
use flint::reference::{KvCache, ReferenceModel, Weights};
use flint::weights::model::{FfnWeights, LayerWeights, LinearWeights, MlpWeights, ModelWeights};
use flint::weights::tree::{Attention, Gqa};
use std::sync::Arc;

fn random(rows: usize, cols: usize, seed: u64, scale: f32) -> PackedMatrix {
    let data: Vec<f32> =
        (0..(rows * cols) as u64).map(|i| (flint::sampler::uniform(seed, i) * 2.0 - 1.0) * scale).collect();
    PackedMatrix::from_f32(rows, cols, &data)
}

#[test]
fn a_model_with_tensors_over_one_binding_runs_on_the_gpu() {
    let (vocab, h, inter) = (300_000, 128, 256);
    let config = ModelConfig {
        family: Family::Llama,
        vocab_size: vocab,
        hidden_size: h,
        num_layers: 1,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 32,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_pairing: RopePairing::Halves,
        rope_scaling: None,
        max_position_embeddings: 64,
        qkv_bias: false,
        qk_norm: QkNorm::None,
        mla: None,
        attention_scale: 1.0 / 32f32.sqrt(),
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        logits_multiplier: 1.0,
        tie_word_embeddings: false,
        intermediate_size: inter,
        moe: None,
        layer_ffn: vec![FfnKind::Dense],
        bos_token_id: None,
        eos_token_ids: vec![],
    };
    config.validate().unwrap();
    let linear = |rows, cols, seed| LinearWeights { weight: random(rows, cols, seed, 0.15), bias: None };
    let weights = ModelWeights {
        embed: random(vocab, h, 1, 1.0),
        layers: vec![LayerWeights {
            attn_norm: vec![1.0; h],
            attn: Attention::Gqa(Gqa {
                q: linear(128, h, 2),
                k: linear(64, h, 3),
                v: linear(64, h, 4),
                q_norm: None,
                k_norm: None,
            }),
            o: linear(h, 128, 5),
            ffn_norm: vec![1.0; h],
            ffn: FfnWeights::Dense(MlpWeights {
                gate: random(inter, h, 6, 0.15),
                up: random(inter, h, 7, 0.15),
                down: random(h, inter, 8, 0.15),
            }),
        }],
        final_norm: vec![1.0; h],
        lm_head: Some(random(vocab, h, 9, 0.2)),
    };
    let gpu = Arc::new(Gpu::new_blocking(Backend::Auto).unwrap());
    let binding = gpu.max_binding_bytes();
    assert!(
        weights.embed.size_in_bytes() as u64 > binding,
        "the test needs a tensor over one binding ({} bytes); this device allows {binding}",
        weights.embed.size_in_bytes()
    );
    let model = GpuModel::new(gpu, &config, &weights, 4, 16, KvFormat::F32).unwrap();
    // Ids from both ends of the vocabulary, so rows in every chunk of the split are read.
    let tokens = [3, 299_999, 150_001, 77_777, 250_000];
    let on_gpu = model.forward(&tokens, 0).unwrap();
    let reference = ReferenceModel::new(config.clone(), Weights::from_packed(&weights));
    let on_cpu = reference.forward(&mut KvCache::new(&config), &tokens).unwrap();
    let scale = on_cpu.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let err = on_gpu.iter().flatten().zip(on_cpu.iter().flatten()).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    // Same tolerance and argument as tests/gpu_parity.rs.
    assert!(err < 1e-3, "split-weight logits differ from the CPU by {err:.2e} of max |logit|");
}
