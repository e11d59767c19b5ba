//! `flint bench` and `flint info --preset`: speed and memory of a model (a checkpoint or a preset
//! with generated weights) against bounds measured in the same run on the same device.
//!
//! Bounds: the buffer-copy bandwidth, and the best streaming read of a plain WGSL kernel
//! (`read_bandwidth.wgsl`). The decode roofline is the weight bytes one token's kernels read
//! (summed from the matmul ops; routed experts count the `k` a token selects) divided by the
//! copy bandwidth. Per-kernel time comes from timestamp queries (one pass per op) where the
//! device has them. Prefill's weight traffic is the same sum over a full chunk's ops, per token
//! (`GpuModel::prefill_weight_bytes`).

use crate::config::presets::{self, Preset};
use crate::engine::build::CHUNK_TOKENS;
use crate::engine::Generator;
use crate::engine::ModelFiles;
use crate::gpu::feed::HostFeed;
use crate::gpu::generated::GeneratedFeed;
use crate::gpu::generator::GpuGenerator;
use crate::gpu::kernels::KvFormat;
use crate::gpu::measure::{copy_gbps, host_rss, op_times, read_gbps};
use crate::gpu::model::{GpuModel, Logits};
use crate::gpu::plan::MemoryPlan;
use crate::gpu::{Backend, Gpu, Op};
use crate::sampler::SamplingParams;
use crate::{Error, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Seed of a preset's generated weights.
const SEED: u32 = 1;

/// `--ctx` where not given: 4096 positions, or the model's context where shorter (a model that
/// cannot be opened gets 4096, and its error when it is loaded).
pub fn default_ctx(preset: Option<&str>, model: Option<&std::path::Path>) -> usize {
    let context = match (preset, model) {
        (Some(name), _) => crate::config::presets::find(name).ok().map(|p| p.config.max_position_embeddings),
        (None, Some(path)) => crate::ModelFiles::open(path).ok().map(|f| f.config.max_position_embeddings),
        (None, None) => None,
    };
    context.map_or(4096, |c| c.min(4096))
}

/// What `flint bench` runs.
pub struct BenchArgs {
    pub model: Option<PathBuf>,
    pub preset: Option<String>,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub ctx: usize,
    pub kv_cache: KvFormat,
    pub json: bool,
    pub backend: Backend,
}

fn gb(bytes: u64) -> String {
    format!("{:.3} GB", bytes as f64 / 1e9)
}

/// `flint info --preset`: the preset's config, parameter counts and memory plan for a KV cache
/// of `ctx` positions (bindings of 128 MiB assumed, as on lavapipe and WebGPU; splits only add
/// a few bytes elsewhere).
pub fn preset_info(name: &str, ctx: usize, json_out: bool) -> Result<()> {
    let p = presets::find(name)?;
    let c = &p.config;
    let plan = MemoryPlan::int4(c, p.group, CHUNK_TOKENS, ctx as u32, KvFormat::default(), 128 << 20)?;
    let (total, active) = c.parameter_counts();
    if json_out {
        let out = json!({
            "preset": p.name,
            "description": p.description,
            "int4_group": p.group,
            "parameters_total": total,
            "parameters_active": active,
            "memory_plan": plan,
            "memory_total_bytes": plan.total(),
            "config": c,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON values serialize"));
        return Ok(());
    }
    let m = c.moe.as_ref().expect("presets are MoE");
    println!("preset      {} ({})", p.name, p.description);
    println!("family      {}", c.family.name());
    let attention = match &c.mla {
        None => format!("heads {}/{} kv, head_dim {}", c.num_heads, c.num_kv_heads, c.head_dim),
        Some(a) => format!(
            "{} heads of latent attention, kv_lora {}, q/k {} + rope {}, v {}",
            c.num_heads, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
        ),
    };
    println!(
        "layers      {} (hidden {}, {attention}, vocabulary {}, context {})",
        c.num_layers, c.hidden_size, c.vocab_size, c.max_position_embeddings
    );
    println!(
        "experts     {} of width {}, top-{}, renormalize {}; shared expert {} (sigmoid gate {}){}",
        m.num_experts,
        m.expert_intermediate_size,
        m.top_k,
        m.routing.renormalize,
        m.shared_expert_intermediate_size.unwrap_or(0),
        m.shared_expert_gate,
        match c.layer_ffn.iter().filter(|k| **k == crate::config::FfnKind::Dense).count() {
            0 => String::new(),
            d => format!("; {d} dense layers of {}", c.intermediate_size),
        }
    );
    println!(
        "attention   q/k/v bias {}, rope theta {}, rms eps {}, untied embeddings {}",
        c.qkv_bias, c.rope_theta, c.rms_norm_eps, !c.tie_word_embeddings
    );
    println!(
        "parameters  {total} total ({:.2}B), {active} active per token ({:.2}B)",
        total as f64 / 1e9,
        active as f64 / 1e9
    );
    println!("weights     INT4, groups of {} with an f16 (scale, offset) pair: {}", p.group, gb(plan.weights));
    println!("vectors     norms and biases (f32): {}", gb(plan.vectors));
    println!(
        "KV cache    {} bytes per token ({} {}, all layers); {} positions: {}",
        plan.kv_per_token,
        serde_json::to_value(plan.kv_format).map_or(String::new(), |v| v.as_str().unwrap_or("").to_string()),
        if c.mla.is_some() { "latent and rotary key" } else { "keys and values" },
        ctx,
        gb(plan.kv_cache)
    );
    println!("scratch     activations for chunks of {} tokens: {}", plan.max_tokens, gb(plan.scratch));
    println!("logits      {}; token ids, step, sampler: {} bytes", gb(plan.logits), plan.io);
    println!("total       {} ({} bytes)", gb(plan.total()), plan.total());
    Ok(())
}

/// A model loaded for benchmarking, with its plan.
struct Loaded {
    model: GpuModel,
    name: String,
    plan: MemoryPlan,
    /// Bytes of the active parameters' matrices (presets: every matrix is INT4 of one group).
    active_matrix_bytes: Option<f64>,
    load_s: f64,
}

fn check_ctx(c: &crate::ModelConfig, ctx: u32) -> Result<()> {
    match ctx as usize <= c.max_position_embeddings {
        true => Ok(()),
        false => {
            Err(Error::Request(format!("--ctx {ctx} exceeds the model's context of {}", c.max_position_embeddings)))
        }
    }
}

fn load(gpu: &Arc<Gpu>, args: &BenchArgs) -> Result<Loaded> {
    let (ctx, kv) = (args.ctx as u32, args.kv_cache);
    let t = Instant::now();
    let loaded = match (&args.preset, &args.model) {
        (Some(name), None) => {
            let Preset { name, config, group, .. } = presets::find(name)?;
            check_ctx(&config, ctx)?;
            let plan = MemoryPlan::int4(&config, group, CHUNK_TOKENS, ctx, kv, gpu.max_binding_bytes())?;
            let model = GpuModel::from_feed(
                gpu.clone(),
                &config,
                &mut GeneratedFeed::new(&config, group, SEED),
                CHUNK_TOKENS,
                ctx,
                kv,
            )?;
            let (_, active) = config.parameter_counts();
            let h = config.hidden_size as u64;
            // A decoded token looks up one row of the embeddings, and norms and biases are vectors.
            let vectors = crate::gpu::plan::MemoryPlan::vectors(&config) / 4;
            let matrix_params = active - config.vocab_size as u64 * h - vectors;
            let per_param = 0.5 + 4.0 / group as f64;
            Loaded {
                model,
                name: name.to_string(),
                plan,
                active_matrix_bytes: Some(matrix_params as f64 * per_param),
                load_s: 0.0,
            }
        }
        (None, Some(path)) => {
            let files = ModelFiles::open(path)?;
            let c = &files.config;
            check_ctx(c, ctx)?;
            let mut feed = HostFeed::from_source(c, files.tensors.as_ref(), &files.names);
            let model = GpuModel::from_feed(gpu.clone(), c, &mut feed, CHUNK_TOKENS.min(ctx), ctx, kv)?;
            let vectors = MemoryPlan::vectors(c);
            let plan = MemoryPlan::with_weights(c, model.weight_bytes, vectors, model.max_tokens, ctx, kv);
            let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
            Loaded { model, name, plan, active_matrix_bytes: None, load_s: 0.0 }
        }
        _ => return Err(Error::Request("give exactly one of --model and --preset".into())),
    };
    Ok(Loaded { load_s: t.elapsed().as_secs_f64(), ..loaded })
}

/// GPU time of one kernel over a step: (kernel, ms, weight bytes read).
type KernelTime = (&'static str, f64, u64);

/// Per-kernel GPU time of one step of `n_tokens` (decode: 1; a full prefill chunk whose last
/// row's logits are read), slowest first, the fastest of `runs`.
fn kernel_times(model: &GpuModel, n_tokens: u32, position: u32, runs: usize) -> Result<Option<Vec<KernelTime>>> {
    let gpu = &model.gpu;
    model.step.set(gpu, n_tokens, position);
    let ops: Vec<&Op> = model.ops_for(n_tokens as usize, Logits::Last);
    // The fastest of the runs of each op: what it costs when nothing else interferes.
    let mut best: Option<Vec<f64>> = None;
    for _ in 0..runs {
        let Some(t) = op_times(gpu, &ops)? else { return Ok(None) };
        best = Some(match best {
            None => t,
            Some(b) => b.iter().zip(&t).map(|(a, b)| a.min(*b)).collect(),
        });
    }
    let mut by_kernel: Vec<KernelTime> = Vec::new();
    for (op, ns) in ops.iter().zip(best.unwrap_or_default()) {
        match by_kernel.iter_mut().find(|k| k.0 == op.label) {
            Some(k) => {
                k.1 += ns / 1e6;
                k.2 += op.weight_bytes;
            }
            None => by_kernel.push((op.label, ns / 1e6, op.weight_bytes)),
        }
    }
    by_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Some(by_kernel))
}

/// `flint bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 {
        return Err(Error::Request("--prompt-tokens and --gen-tokens must be at least 1".into()));
    }
    if args.prompt_tokens + args.gen_tokens + 1 > args.ctx {
        return Err(Error::Request(format!(
            "{} prompt and {} generated tokens do not fit a context of {} (--ctx)",
            args.prompt_tokens, args.gen_tokens, args.ctx
        )));
    }
    let gpu = Arc::new(Gpu::new_blocking(args.backend)?);
    let say = |s: String| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    say(format!("device      {}", gpu.describe()));
    // Bounds first, while the device holds nothing else; their buffers are freed after.
    let copy = copy_gbps(&gpu, 256 << 20);
    let read = read_gbps(&gpu, 512 << 20)?;
    say(format!(
        "bounds      buffer copy {copy:.1} GB/s; best streaming read {:.1} GB/s (read_bandwidth.wgsl, {} invocations, {} vec4 per workgroup)",
        read.gbps, read.workgroup, read.vec4s_per_workgroup
    ));
    let base = gpu.allocated_bytes();

    let Loaded { model, name, plan, active_matrix_bytes, load_s } = load(&gpu, args)?;
    let c = model.config.clone();
    if args.ctx > c.max_position_embeddings {
        return Err(Error::Request(format!(
            "--ctx {} exceeds the model's context of {}",
            args.ctx, c.max_position_embeddings
        )));
    }
    let bytes_per_token = model.decode_weight_bytes();
    let prefill_bytes_per_token = model.prefill_weight_bytes() as f64 / f64::from(model.max_tokens);
    let dispatches = model.decode_ops.len() + 1;
    let mut generator = GpuGenerator::new(model)?;
    let allocated = gpu.allocated_bytes() - base;
    say(format!(
        "model       {name}: loaded in {load_s:.2} s; {} on the GPU (plan {})",
        gb(allocated),
        gb(plan.total())
    ));

    let vocab = c.vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prompt_tokens as u32).map(|i| (i * 7 + 3) % vocab).collect();
    let greedy = SamplingParams::default();
    // Warm-up: compiles every pipeline of prefill, decode and the sampler.
    generator.start(&prompt[..prompt.len().min(CHUNK_TOKENS as usize + 1)], &greedy, 3)?;
    for _ in 0..3 {
        generator.next_token()?;
    }
    let t = Instant::now();
    generator.start(&prompt, &greedy, args.gen_tokens + 1)?;
    generator.next_token()?;
    let ttft = t.elapsed().as_secs_f64();
    let waits = gpu.host_waits();
    let t = Instant::now();
    for _ in 0..args.gen_tokens {
        generator.next_token()?;
    }
    let decode_s = t.elapsed().as_secs_f64();
    let host_waits = (gpu.host_waits() - waits) as f64 / args.gen_tokens as f64;
    let decode_tok_s = args.gen_tokens as f64 / decode_s;
    let prefill_tok_s = args.prompt_tokens as f64 / ttft;
    let roofline_tok_s = copy * 1e9 / bytes_per_token as f64;
    let read_roofline_tok_s = read.gbps * 1e9 / bytes_per_token as f64;

    let position = (args.prompt_tokens + args.gen_tokens) as u32;
    let kernels = kernel_times(&generator.model, 1, position, 3)?;
    // One prefill chunk after the sequence (its cache writes are never read): where prefill's
    // time goes. Once: a chunk takes seconds on a software device.
    let chunk = generator.model.max_tokens;
    let prefill_kernels = match position + chunk <= generator.model.max_ctx {
        true => kernel_times(&generator.model, chunk, position, 1)?,
        false => None,
    };
    let peak = gpu.peak_bytes() - base;
    let rss = host_rss();

    let plan_error = allocated as f64 / plan.total() as f64 - 1.0;
    let matvec = kernels.as_ref().map(|k| {
        let (ms, bytes) = k
            .iter()
            .filter(|(label, _, _)| label.starts_with("matmul_int4"))
            .fold((0.0, 0u64), |(t, b), (_, ms, bytes)| (t + ms, b + bytes));
        bytes as f64 / (ms / 1e3) / 1e9
    });
    let profiled_ms: Option<f64> = kernels.as_ref().map(|k| k.iter().map(|x| x.1).sum());
    if args.json {
        let out = json!({
            "device": gpu.describe(),
            "model": name,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "ctx": args.ctx,
            "load_s": load_s,
            "prefill_tok_s": prefill_tok_s,
            "ttft_ms": ttft * 1e3,
            "decode_tok_s": decode_tok_s,
            "peak_gpu_bytes": peak,
            "allocated_gpu_bytes": allocated,
            "plan_gpu_bytes": plan.total(),
            "plan_error": plan_error,
            "memory_plan": plan,
            "host_rss_peak_bytes": rss.map(|r| r.0),
            "host_rss_bytes": rss.map(|r| r.1),
            "copy_gbps": copy,
            "read_gbps": read.gbps,
            "read_kernel": read,
            "weight_bytes_per_token": bytes_per_token,
            "prefill_weight_bytes_per_token": prefill_bytes_per_token,
            "prefill_decode_ratio": prefill_tok_s / decode_tok_s,
            "active_matrix_bytes": active_matrix_bytes,
            "roofline_tok_s": roofline_tok_s,
            "roofline_fraction": decode_tok_s / roofline_tok_s,
            "read_roofline_fraction": decode_tok_s / read_roofline_tok_s,
            "dispatches_per_token": dispatches,
            "host_waits_per_token": host_waits,
            "int4_matvec_gbps": matvec,
            "int4_matvec_copy_fraction": matvec.map(|g| g / copy),
            "int4_matvec_read_fraction": matvec.map(|g| g / read.gbps),
            "profiled_decode_ms": profiled_ms,
            "top_kernel": kernels.as_ref().and_then(|k| k.first().map(|k| k.0)),
            "kernels": kernels.as_ref().map(|k| k.iter().map(|(label, ms, bytes)| json!({
                "kernel": label, "ms_per_token": ms, "weight_bytes": bytes,
            })).collect::<Vec<_>>()),
            "prefill_chunk_tokens": chunk,
            "profiled_prefill_chunk_ms": prefill_kernels.as_ref().map(|k| k.iter().map(|x| x.1).sum::<f64>()),
            "prefill_kernels": prefill_kernels.as_ref().map(|k| k.iter().map(|(label, ms, bytes)| json!({
                "kernel": label, "ms_per_chunk": ms, "weight_bytes": bytes,
            })).collect::<Vec<_>>()),
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON values serialize"));
        return Ok(());
    }
    println!(
        "memory      GPU {} allocated, peak {}, plan {} ({:+.2}%); host RSS peak {}",
        gb(allocated),
        gb(peak),
        gb(plan.total()),
        100.0 * plan_error,
        rss.map_or("?".into(), |r| gb(r.0))
    );
    println!(
        "prefill     {} tokens: {prefill_tok_s:.1} tok/s ({:.1}x decode), time to first token {:.0} ms; \
         {:.1} MB of weights per token",
        args.prompt_tokens,
        prefill_tok_s / decode_tok_s,
        ttft * 1e3,
        prefill_bytes_per_token / 1e6
    );
    println!(
        "decode      {decode_tok_s:.2} tok/s; {:.1} MB of weights per token{}",
        bytes_per_token as f64 / 1e6,
        active_matrix_bytes.map_or(String::new(), |a| format!(" (active parameters: {:.1} MB)", a / 1e6))
    );
    println!(
        "roofline    {roofline_tok_s:.2} tok/s at the copy bandwidth: {:.1}% achieved ({:.1}% of the streaming-read roofline)",
        100.0 * decode_tok_s / roofline_tok_s,
        100.0 * decode_tok_s / read_roofline_tok_s
    );
    println!("per token   {dispatches} dispatches, {host_waits:.2} host waits");
    match &kernels {
        Some(k) => {
            let total: f64 = k.iter().map(|x| x.1).sum();
            println!("kernels     one decode step, one pass per op (timestamps): {total:.1} ms");
            for (label, ms, bytes) in k {
                let rate =
                    if *bytes > 0 { format!(", {:.1} GB/s", *bytes as f64 / (ms / 1e3) / 1e9) } else { String::new() };
                println!("  {label:<16} {ms:>8.2} ms {:>5.1}%{rate}", 100.0 * ms / total);
            }
            if let Some(g) = matvec {
                println!(
                    "INT4 matvec {g:.1} GB/s = {:.0}% of copy, {:.0}% of the streaming read",
                    100.0 * g / copy,
                    100.0 * g / read.gbps
                );
            }
        }
        None => println!("kernels     the device has no timestamp queries"),
    }
    if let Some(k) = &prefill_kernels {
        let total: f64 = k.iter().map(|x| x.1).sum();
        println!("prefill     one chunk of {chunk} tokens, one pass per op (timestamps): {total:.0} ms");
        for (label, ms, _) in k.iter().take(6) {
            println!("  {label:<16} {ms:>8.1} ms {:>5.1}%", 100.0 * ms / total);
        }
    }
    Ok(())
}
