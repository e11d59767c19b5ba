//! Decode and prefill speed of the GPU engine, reported against bounds measured in the same
//! run: the device's buffer-copy bandwidth, and the decode roofline (weight bytes read per
//! token / copy bandwidth).
//!
//! `cargo bench --bench decode` — SmolLM2 (if fetched) and a synthetic MoE of a few hundred MB
//! of INT4 weights generated directly in the packed format.

use flint::config::{Family, FfnKind, ModelConfig, MoeConfig, QkNorm, RopePairing, Routing};
use flint::engine::Generator;
use flint::gpu::generator::GpuGenerator;
use flint::gpu::kernels::KvFormat;
use flint::gpu::model::GpuModel;
use flint::gpu::{Backend, Gpu};
use flint::quant::packed::{pack_f16_pair, Format, PackedMatrix};
use flint::sampler::SamplingParams;
use flint::weights::model::{FfnWeights, LayerWeights, LinearWeights, MlpWeights, ModelWeights, MoeWeights};
use flint::weights::tree::{Attention, Gqa};
use std::sync::Arc;
use std::time::Instant;

/// GB/s of a 256 MiB buffer-to-buffer copy (bytes read + written count once each way: we
/// report bytes copied, the figure a streaming read is compared against).
fn copy_bandwidth(gpu: &Gpu) -> f64 {
    let bytes = 256u64 << 20;
    let src = gpu.storage_zeroed("copy src", bytes);
    let dst = gpu.storage_zeroed("copy dst", bytes);
    let run = || {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
        let i = gpu.queue.submit([enc.finish()]);
        gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(i), timeout: None }).unwrap();
    };
    run();
    let t = Instant::now();
    for _ in 0..5 {
        run();
    }
    5.0 * bytes as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// A random INT4 matrix (group 32, f16 scales), generated in the packed format directly.
fn random_int4(rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let mut z = seed;
    let mut next = move || {
        z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (z >> 32) as u32
    };
    let qs = (0..rows * cols / 8).map(|_| next()).collect();
    let d = half::f16::from_f32(0.02);
    let m = half::f16::from_f32(-0.15);
    let scales = vec![pack_f16_pair(d, m); rows * cols / 32];
    PackedMatrix::new(rows, cols, Format::Int4 { group: 32, wide_scales: false }, qs, scales).unwrap()
}

/// A Qwen-MoE-shaped synthetic model: 8 layers, hidden 1024, 32 experts of 512, top-4.
fn synthetic_moe() -> (ModelConfig, ModelWeights) {
    let (h, e, ie, k, layers, vocab) = (1024, 32, 512, 4, 8, 32000);
    let config = ModelConfig {
        family: Family::Qwen2Moe,
        vocab_size: vocab,
        hidden_size: h,
        num_layers: layers,
        num_heads: 16,
        num_kv_heads: 4,
        head_dim: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_pairing: RopePairing::Halves,
        rope_scaling: None,
        max_position_embeddings: 4096,
        qkv_bias: false,
        qk_norm: QkNorm::None,
        mla: None,
        attention_scale: 0.125,
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        logits_multiplier: 1.0,
        tie_word_embeddings: false,
        intermediate_size: 0,
        moe: Some(MoeConfig {
            num_experts: e,
            top_k: k,
            expert_intermediate_size: ie,
            routing: Routing::softmax(true),
            shared_expert_intermediate_size: None,
            shared_expert_gate: false,
        }),
        layer_ffn: vec![FfnKind::Moe; layers],
        bos_token_id: None,
        eos_token_ids: vec![],
    };
    let lin = |rows, cols, seed| LinearWeights { weight: random_int4(rows, cols, seed), bias: None };
    let weights = ModelWeights {
        embed: random_int4(vocab, h, 1),
        layers: (0..layers as u64)
            .map(|l| LayerWeights {
                attn_norm: vec![1.0; h],
                attn: Attention::Gqa(Gqa {
                    q: lin(1024, h, 10 * l + 2),
                    k: lin(256, h, 10 * l + 3),
                    v: lin(256, h, 10 * l + 4),
                    q_norm: None,
                    k_norm: None,
                }),
                o: lin(h, 1024, 10 * l + 5),
                ffn_norm: vec![1.0; h],
                ffn: FfnWeights::Moe(Box::new(MoeWeights {
                    router: PackedMatrix::from_f32(e, h, &vec![0.01; e * h]),
                    router_bias: None,
                    experts: MlpWeights {
                        gate: random_int4(e * ie, h, 10 * l + 6),
                        up: random_int4(e * ie, h, 10 * l + 7),
                        down: random_int4(e * h, ie, 10 * l + 8),
                    },
                    shared: None,
                    shared_gate: None,
                })),
            })
            .collect(),
        final_norm: vec![1.0; h],
        lm_head: Some(random_int4(vocab, h, 9)),
    };
    (config, weights)
}

/// Weight bytes one decoded token reads: everything but the unselected experts and the
/// embedding table (one row).
fn bytes_per_token(w: &ModelWeights, c: &ModelConfig) -> f64 {
    let mut bytes = w.output().size_in_bytes() as f64;
    for l in &w.layers {
        let Attention::Gqa(a) = &l.attn else { unreachable!("the synthetic model has GQA") };
        bytes += [&a.q, &a.k, &a.v, &l.o].iter().map(|x| x.weight.size_in_bytes() as f64).sum::<f64>();
        bytes += match &l.ffn {
            FfnWeights::Dense(m) => (m.gate.size_in_bytes() + m.up.size_in_bytes() + m.down.size_in_bytes()) as f64,
            FfnWeights::Moe(m) => {
                let moe = c.moe.as_ref().unwrap();
                let experts = (m.experts.gate.size_in_bytes()
                    + m.experts.up.size_in_bytes()
                    + m.experts.down.size_in_bytes()) as f64;
                m.router.size_in_bytes() as f64 + experts * moe.top_k as f64 / moe.num_experts as f64
            }
        };
    }
    bytes
}

fn bench(name: &str, gpu: &Arc<Gpu>, config: &ModelConfig, weights: &ModelWeights, copy_gbps: f64) {
    let t = Instant::now();
    let model = GpuModel::new(gpu.clone(), config, weights, 64, 512, KvFormat::default()).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let mut generator = GpuGenerator::new(model).unwrap();
    let prompt: Vec<u32> = (0..128).map(|i| (i * 7 + 3) % config.vocab_size as u32).collect();
    let gen = 32;
    // Warm-up: compiles every pipeline.
    generator.start(&prompt[..8], &SamplingParams::default(), 2).unwrap();
    generator.next_token().unwrap();
    let t = Instant::now();
    generator.start(&prompt, &SamplingParams::default(), gen + 1).unwrap();
    generator.next_token().unwrap();
    let ttft = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..gen {
        generator.next_token().unwrap();
    }
    let decode_tok_s = gen as f64 / t.elapsed().as_secs_f64();
    let bytes = bytes_per_token(weights, config);
    let roofline_tok_s = copy_gbps * 1e9 / bytes;
    println!(
        "{name}: weights {:.0} MB on GPU, upload {load_s:.2} s; prefill 128 tokens {:.1} tok/s (ttft {:.0} ms); \
         decode {decode_tok_s:.2} tok/s = {:.1}% of the copy-bandwidth roofline ({roofline_tok_s:.1} tok/s at {:.1} MB/token)",
        generator.model.weight_bytes as f64 / 1e6,
        128.0 / ttft,
        ttft * 1e3,
        100.0 * decode_tok_s / roofline_tok_s,
        bytes / 1e6,
    );
}

fn main() {
    let gpu = Arc::new(Gpu::new_blocking(Backend::Auto).expect("a GPU adapter"));
    let copy_gbps = copy_bandwidth(&gpu);
    println!("device: {}; buffer copy {copy_gbps:.1} GB/s", gpu.describe());
    let smol = flint::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if smol.is_file() {
        let files = flint::ModelFiles::open(&smol).unwrap();
        bench("SmolLM2-135M Q4_1", &gpu, &files.config, &files.load_weights().unwrap(), copy_gbps);
    } else {
        println!("SmolLM2 not fetched (scripts/fetch-model.sh): skipped");
    }
    let (config, weights) = synthetic_moe();
    bench("synthetic MoE (8 layers, 32 experts top-4, INT4)", &gpu, &config, &weights, copy_gbps);
}
