//! Presets with generated weights: the device-generated model equals its host twin and the CPU
//! reference; the memory plan equals what the device allocated; decode reads the active
//! parameters only.

use flint::config::presets::{self, PRESET_GROUP};
use flint::config::{FfnKind, ModelConfig};
use flint::gpu::feed::HostFeed;
use flint::gpu::generated::{host_weights, GeneratedFeed};
use flint::gpu::generator::GpuGenerator;
use flint::gpu::kernels::KvFormat;
use flint::gpu::model::GpuModel;
use flint::gpu::plan::MemoryPlan;
use flint::gpu::{Backend, Gpu};
use flint::reference::{KvCache, ReferenceModel, Weights};
use std::sync::Arc;

fn gpu() -> Arc<Gpu> {
    Arc::new(Gpu::new_blocking(Backend::Auto).expect("a GPU adapter (lavapipe in CI)"))
}

/// The 0.6B preset shrunk to a few MB, `experts` routed experts of it.
fn tiny(experts: usize) -> ModelConfig {
    let mut c = presets::find("muse-spark-0.6b").unwrap().config;
    c.vocab_size = 320;
    c.hidden_size = 128;
    c.num_layers = 2;
    c.layer_ffn = vec![FfnKind::Moe; 2];
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 32;
    c.attention_scale = 1.0 / 32f32.sqrt();
    let m = c.moe.as_mut().unwrap();
    m.num_experts = experts;
    m.top_k = 2;
    m.expert_intermediate_size = 64;
    m.shared_expert_intermediate_size = Some(192);
    c
}

#[test]
fn generated_model_equals_its_host_twin_and_the_reference() {
    let gpu = gpu();
    let c = tiny(8);
    let tokens = [3u32, 100, 7, 319, 0, 55];
    let generated =
        GpuModel::from_feed(gpu.clone(), &c, &mut GeneratedFeed::new(&c, PRESET_GROUP, 42), 4, 16, KvFormat::F32)
            .unwrap();
    let weights = host_weights(&c, PRESET_GROUP, 42).unwrap();
    let uploaded =
        GpuModel::from_feed(gpu.clone(), &c, &mut HostFeed::from_weights(&weights), 4, 16, KvFormat::F32).unwrap();
    let got = generated.forward(&tokens, 0).unwrap();
    // The same bits in the same buffers through the same ops: equal, not close.
    assert_eq!(got, uploaded.forward(&tokens, 0).unwrap());

    let reference = ReferenceModel::new(c.clone(), Weights::from_packed(&weights));
    let want = reference.forward(&mut KvCache::new(&c), &tokens).unwrap();
    let scale = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    // Scaled as designed, logits are of order 1, neither vanishing nor blowing up.
    assert!((0.1..100.0).contains(&scale), "max |logit| {scale}");
    // f32 on both sides, summed in different orders: the fixtures' GPU bound (1e-3 of the
    // largest logit, measured ~1e-6 there).
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() <= 1e-3 * scale, "GPU {g} vs reference {w}");
    }
}

#[test]
fn memory_plan_equals_allocations_and_decode_reads_active_parameters() {
    // A fresh device per model, so its allocation count is the model's alone.
    let preset = presets::find("muse-spark-0.6b").unwrap();
    let c = &preset.config;
    let gpu = gpu();
    let (max_tokens, ctx) = (64, 1024);
    let plan = MemoryPlan::int4(c, preset.group, max_tokens, ctx, KvFormat::F16, gpu.max_binding_bytes()).unwrap();
    let model = GpuModel::from_feed(
        gpu.clone(),
        c,
        &mut GeneratedFeed::new(c, preset.group, 1),
        max_tokens,
        ctx,
        KvFormat::F16,
    )
    .unwrap();
    assert_eq!(model.weight_bytes, plan.weights, "weight matrices");
    assert_eq!(model.kv_bytes, plan.kv_cache, "KV cache");
    let generator = GpuGenerator::new(model).unwrap();
    let allocated = gpu.allocated_bytes() as f64;
    // Everything but the ops' parameter uniforms is planned to the byte; those are a few KB.
    let total = plan.total() as f64;
    assert!(allocated >= total && allocated <= 1.02 * total, "allocated {allocated}, planned {total}");

    // Bytes a decoded token reads, summed from what the matmul kernels read, against the bytes
    // of the active parameters (less the embedding table, of which a token reads one row, and
    // the norms and biases): INT4 in groups of 64 with an f16 pair is 4.5 bits per weight.
    let model = &generator.model;
    let (_, active) = c.parameter_counts();
    let h = c.hidden_size as u64;
    let vectors = h + c.num_layers as u64 * (2 * h + (c.q_dim() + 2 * c.kv_dim()) as u64);
    let matrix_params = active - c.vocab_size as u64 * h - vectors;
    let active_bytes = matrix_params as f64 * (0.5 + 4.0 / preset.group as f64);
    let read = model.decode_weight_bytes() as f64;
    assert!((read / active_bytes - 1.0).abs() < 0.05, "read {read} per token, active parameters {active_bytes}");
}

#[test]
fn four_times_the_experts_reads_the_same_bytes_per_token() {
    let gpu = gpu();
    let bytes = |experts| {
        let c = tiny(experts);
        let m = GpuModel::from_feed(
            gpu.clone(),
            &c,
            &mut GeneratedFeed::new(&c, PRESET_GROUP, 3),
            4,
            16,
            KvFormat::default(),
        )
        .unwrap();
        (m.decode_weight_bytes(), m.weight_bytes)
    };
    let (few, many) = (bytes(8), bytes(32));
    // Only the routers ([E, H], read whole) grow with the experts: 2 layers x 24 more rows of
    // 128 nibbles (64 bytes) and 2 f16 pairs (8 bytes).
    assert_eq!(many.0 - few.0, 2 * 24 * (64 + 8));
    assert!(many.1 > 2 * few.1, "the model itself is larger: {} vs {}", many.1, few.1);
}
