//! `flint` subcommands: info, logits, run, bench, serve, chat, quantize.

mod bench;
mod chat;
mod hub;
mod quantize;
mod serve;

use crate::engine::{generate, CpuGenerator, GenerateOptions, Generator};
use crate::gpu::generator::GpuGenerator;
use crate::gpu::model::GpuModel;
use crate::model::ModelFiles;
use crate::sampler::SamplingParams;
use crate::tokenizer::Message;
use crate::weights::model::ModelWeights;
use crate::ModelConfig;
use crate::{Error, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

/// The default real model: SmolLM2-135M-Instruct, Q4_1 GGUF (fetched by scripts/fetch-model.sh).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Parser)]
#[command(name = "flint", version, about = "Run sparse Mixture-of-Experts language models on your own GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Device {
    /// The WGSL engine on the GPU (native Vulkan/Metal/DX12/GL through wgpu).
    Gpu,
    /// The f32 CPU reference.
    Cpu,
}

/// Which native graphics API to run on.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum BackendArg {
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl From<BackendArg> for crate::gpu::Backend {
    fn from(b: BackendArg) -> Self {
        use crate::gpu::Backend;
        match b {
            BackendArg::Auto => Backend::Auto,
            BackendArg::Vulkan => Backend::Vulkan,
            BackendArg::Metal => Backend::Metal,
            BackendArg::Dx12 => Backend::Dx12,
            BackendArg::Gl => Backend::Gl,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model: family, layers, experts, parameters, bytes on disk.
    #[command(after_help = "Example:\n  flint info --model ~/.cache/flint/models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    #[command(
        after_help = "Examples:\n  flint info --model ~/.cache/flint/models/SmolLM2-135M-Instruct.Q4_1.gguf\n  flint info --device --backend vulkan"
    )]
    Info {
        /// A Hugging Face model folder or a .gguf file.
        #[arg(long, required_unless_present_any = ["device", "preset"])]
        model: Option<PathBuf>,
        /// Describe the GPU instead: adapter, limits, features.
        #[arg(long)]
        device: bool,
        /// Describe a preset (generated weights) and its exact GPU memory plan instead.
        #[arg(long, conflicts_with_all = ["model", "device"])]
        preset: Option<String>,
        /// KV cache positions of the preset's memory plan.
        #[arg(long, default_value_t = 4096)]
        ctx: usize,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the logits of every position of a token sequence, as JSON.
    #[command(after_help = "Example:\n  flint logits --model tests/fixtures/models/mixtral --tokens 1,2,3")]
    Logits {
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
        #[arg(long, value_enum, default_value = "gpu")]
        device: Device,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendArg,
        /// Positions the GPU's KV cache holds (at most the model's context).
        #[arg(long, default_value_t = 2048)]
        ctx: usize,
    },
    /// Generate text from a prompt, streamed to stdout.
    #[command(
        after_help = "Examples:\n  flint run --prompt \"The capital of France is\"\n  flint run --chat --prompt \"Write a haiku about rivers\" --temperature 0.7 --seed 1"
    )]
    Run {
        /// A Hugging Face model folder or a .gguf file (default: SmolLM2-135M-Instruct from the cache).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// 0 means greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// 0 means no limit.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long)]
        seed: Option<u64>,
        /// Wrap the prompt in the model's chat template as a user message.
        #[arg(long)]
        chat: bool,
        /// With --chat: a system message before the user's.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        #[arg(long, value_enum, default_value = "gpu")]
        device: Device,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendArg,
        /// Positions the GPU's KV cache holds (at most the model's context).
        #[arg(long, default_value_t = 2048)]
        ctx: usize,
    },
    /// Measure load time, prefill and decode speed, and memory against bounds measured in the same run.
    #[command(
        after_help = "Examples:\n  flint bench --preset muse-spark-1.8b --json\n  flint bench --model ~/.cache/flint/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    Bench {
        /// A Hugging Face model folder or a .gguf file.
        #[arg(long, required_unless_present = "preset", conflicts_with = "preset")]
        model: Option<PathBuf>,
        /// A preset with weights generated on the device (see `flint info --preset`).
        #[arg(long)]
        preset: Option<String>,
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 32)]
        gen_tokens: usize,
        /// Positions the KV cache holds.
        #[arg(long, default_value_t = 4096)]
        ctx: usize,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serve the model over an OpenAI-compatible HTTP API (chat/completions, completions, models).
    #[command(after_help = serve::EXAMPLES)]
    Serve(serve::ServeArgs),
    /// Chat with the model in the terminal (Ctrl-C stops an answer, Ctrl-D or /exit leaves).
    #[command(after_help = chat::EXAMPLES)]
    Chat(chat::ChatArgs),
    /// Quantize a Hugging Face model folder to INT4, written as a GPTQ checkpoint.
    #[command(after_help = quantize::EXAMPLES)]
    Quantize(quantize::QuantizeArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `RUST_LOG` overrides; the server logs its requests by default, other commands only warnings.
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The model to load: `model` (a path, or a Hugging Face repo id to download), else the default.
pub(crate) fn model_path(model: Option<PathBuf>) -> Result<PathBuf> {
    match model {
        Some(p) => hub::resolve(&p),
        None => default_model(),
    }
}

fn default_model() -> Result<PathBuf> {
    let path = crate::cache_dir().join("models").join(DEFAULT_MODEL_FILE);
    match path.is_file() {
        true => Ok(path),
        false => Err(Error::Request(format!(
            "no --model given and the default model is not at {}; fetch it with `scripts/fetch-model.sh`",
            path.display()
        ))),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { device: true, backend, json, .. } => device_info(backend.into(), json),
        Command::Info { preset: Some(name), ctx, json, .. } => bench::preset_info(&name, ctx, json),
        Command::Bench { model, preset, prompt_tokens, gen_tokens, ctx, backend, json } => {
            let backend = backend.into();
            bench::bench(&bench::BenchArgs { model, preset, prompt_tokens, gen_tokens, ctx, json, backend })
        }
        Command::Info { model, json, .. } => info(&ModelFiles::open(&model_path(model)?)?, json),
        Command::Serve(args) => serve::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Logits { model, tokens, device, backend, ctx } => {
            let files = ModelFiles::open(&hub::resolve(&model)?)?;
            let logits = match device {
                Device::Cpu => {
                    let reference = files.load_reference()?;
                    let mut cache = crate::reference::KvCache::new(&reference.config);
                    reference.forward(&mut cache, &tokens)?
                }
                Device::Gpu => gpu_model(&files, backend, ctx.max(tokens.len()))?.forward(&tokens, 0)?,
            };
            let out = serde_json::json!({ "tokens": tokens, "logits": logits });
            println!("{out}");
            Ok(())
        }
        Command::Run {
            model,
            prompt,
            max_tokens,
            temperature,
            top_p,
            top_k,
            seed,
            chat,
            system,
            device,
            backend,
            ctx,
        } => {
            let path = model_path(model)?;
            let files = ModelFiles::open(&path)?;
            let tokenizer = files
                .tokenizer
                .as_ref()
                .ok_or_else(|| Error::Tokenizer(format!("{} has no tokenizer", path.display())))?;
            let text = match chat {
                true => {
                    let mut messages: Vec<Message> = system.iter().map(|s| Message::new("system", s)).collect();
                    messages.push(Message::new("user", &prompt));
                    tokenizer.apply_chat_template(&messages, true)?
                }
                false => prompt,
            };
            let ids = tokenizer.encode(&text, true)?;
            let seed = seed.unwrap_or_else(clock_seed);
            let options = GenerateOptions {
                max_tokens,
                sampling: SamplingParams { temperature, top_k, top_p, seed },
                stop: vec![],
                stop_token_ids: files.stop_token_ids(),
            };
            options.sampling.check()?;
            let mut forward = build_generator(&files.config, &load_weights(&files)?, device, backend, ctx)?;
            let mut stdout = std::io::stdout().lock();
            if !chat {
                let _ = write!(stdout, "{text}");
            }
            generate(forward.as_mut(), tokenizer, &ids, &options, |piece| {
                let ok = write!(stdout, "{piece}").and_then(|_| stdout.flush());
                // A closed stdout (`| head`) ends generation quietly.
                if ok.is_ok() {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })?;
            let _ = writeln!(stdout);
            Ok(())
        }
    }
}

fn info(files: &ModelFiles, json: bool) -> Result<()> {
    let c = &files.config;
    let (total, active) = c.parameter_counts();
    let bytes = files.tensors.size_in_bytes();
    if json {
        let out = serde_json::json!({
            "family": c.family,
            "format": files.format,
            "layers": c.num_layers,
            "hidden_size": c.hidden_size,
            "heads": c.num_heads,
            "kv_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "vocab_size": c.vocab_size,
            "experts": c.moe.as_ref().map(|m| serde_json::json!({
                "total": m.num_experts,
                "top_k": m.top_k,
                "shared": m.shared_expert_intermediate_size.is_some() as usize,
            })),
            "parameters_total": total,
            "parameters_active": active,
            "bytes_on_disk": bytes,
            "config": c,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON values serialize"));
        return Ok(());
    }
    println!("model       {}", files.path.display());
    println!("family      {}", c.family.name());
    println!("format      {}", files.format);
    println!(
        "layers      {} (hidden {}, heads {}/{} kv, head_dim {})",
        c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    );
    match &c.moe {
        Some(m) => {
            let dense = c.layer_ffn.iter().filter(|k| **k == crate::config::FfnKind::Dense).count();
            println!(
                "experts     {} total, top-{} per token, {} shared{}",
                m.num_experts,
                m.top_k,
                m.shared_expert_intermediate_size.is_some() as usize,
                if dense > 0 { format!(", {dense} dense layers") } else { String::new() }
            );
        }
        None => println!("experts     dense (one always-selected FFN)"),
    }
    println!("vocabulary  {}", c.vocab_size);
    println!("context     {}", c.max_position_embeddings);
    println!("parameters  {} total, {} active per token", human(total), human(active));
    println!("on disk     {} bytes ({:.1} MiB)", bytes, bytes as f64 / (1 << 20) as f64);
    Ok(())
}

/// Tokens per prefill chunk on the GPU.
const CHUNK_TOKENS: u32 = 64;

/// Loads `files` onto the GPU with a KV cache of `ctx` positions (at most the model's context).
fn gpu_model(files: &ModelFiles, backend: BackendArg, ctx: usize) -> Result<GpuModel> {
    gpu_model_of(&files.config, &files.load_weights()?, backend, ctx)
}

fn gpu_model_of(config: &ModelConfig, weights: &ModelWeights, backend: BackendArg, ctx: usize) -> Result<GpuModel> {
    let gpu = std::sync::Arc::new(crate::gpu::Gpu::new_blocking(backend.into())?);
    let ctx = ctx.clamp(1, config.max_position_embeddings) as u32;
    GpuModel::new(gpu, config, weights, CHUNK_TOKENS.min(ctx), ctx)
}

/// Reads every weight, with a spinner on a terminal (a large model takes a while).
pub(crate) fn load_weights(files: &ModelFiles) -> Result<ModelWeights> {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(format!("loading {}", files.path.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let weights = files.load_weights();
    spinner.finish_and_clear();
    weights
}

/// The generator `flint run`, `serve` and `chat` share: the GPU engine or the CPU reference.
pub(crate) fn build_generator(
    config: &ModelConfig,
    weights: &ModelWeights,
    device: Device,
    backend: BackendArg,
    ctx: usize,
) -> Result<Box<dyn Generator>> {
    Ok(match device {
        Device::Cpu => Box::new(CpuGenerator::new(crate::reference::ReferenceModel::new(
            config.clone(),
            crate::reference::Weights::from_packed(weights),
        ))),
        Device::Gpu => Box::new(GpuGenerator::new(gpu_model_of(config, weights, backend, ctx)?)?),
    })
}

/// A seed from the clock, for requests that give none.
pub(crate) fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn device_info(backend: crate::gpu::Backend, json: bool) -> Result<()> {
    let gpu = crate::gpu::Gpu::new_blocking(backend)?;
    let l = &gpu.limits;
    if json {
        let out = serde_json::json!({
            "name": gpu.info.name,
            "backend": format!("{:?}", gpu.info.backend),
            "device_type": format!("{:?}", gpu.info.device_type),
            "driver": gpu.info.driver,
            "driver_info": gpu.info.driver_info,
            "features": format!("{:?}", gpu.features),
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON values serialize"));
        return Ok(());
    }
    println!("adapter     {}", gpu.describe());
    println!("driver      {} {}", gpu.info.driver, gpu.info.driver_info);
    println!("features    {:?}", gpu.features);
    println!(
        "max buffer  {} MiB, max storage binding {} MiB",
        l.max_buffer_size >> 20,
        l.max_storage_buffer_binding_size >> 20
    );
    println!(
        "workgroup   {} invocations, {} KiB shared memory, {} storage buffers per stage",
        l.max_compute_invocations_per_workgroup,
        l.max_compute_workgroup_storage_size >> 10,
        l.max_storage_buffers_per_shader_stage
    );
    Ok(())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
