//! `flint` subcommands: info, logits, run, bench, serve, chat, quantize.

mod bench;
mod chat;
mod hub;
mod info;
mod quantize;
mod serve;

use crate::engine::build::{self, Device};
use crate::engine::{generate, GenerateOptions, Generator, ModelFiles};
use crate::gpu::kernels::KvFormat;
use crate::gpu::Backend;
use crate::sampler::{clock_seed, SamplingParams};
use crate::tokenizer::Message;
use crate::weights::model::ModelWeights;
use crate::{Error, Result};
use clap::{Args, Parser, Subcommand};
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

/// Which engine runs the model and how many positions its KV cache holds (run, logits, chat,
/// serve).
#[derive(Args, Clone, Copy)]
pub(crate) struct EngineArgs {
    #[arg(long, value_enum, default_value = "gpu")]
    pub device: Device,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Positions the KV cache holds: prompt plus completion (at most the model's context).
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// What the GPU's KV cache stores: f16 (half the memory and reads) or f32 (the reference's
    /// exact arithmetic).
    #[arg(long, value_enum, default_value = "f16")]
    pub kv_cache: KvFormat,
}

impl EngineArgs {
    /// The generator for `files`, its weights read with a spinner.
    pub fn generator(&self, files: &ModelFiles) -> Result<Box<dyn Generator>> {
        build::generator(&files.config, &load_weights(files)?, self.device, self.backend, self.ctx, self.kv_cache)
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
        backend: Backend,
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
        #[command(flatten)]
        engine: EngineArgs,
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
        #[command(flatten)]
        engine: EngineArgs,
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
        /// Positions the KV cache holds [default: 4096, or the model's context where shorter].
        #[arg(long)]
        ctx: Option<usize>,
        /// What the KV cache stores.
        #[arg(long, value_enum, default_value = "f16")]
        kv_cache: KvFormat,
        #[arg(long, value_enum, default_value = "auto")]
        backend: Backend,
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
        Command::Info { device: true, backend, json, .. } => info::device_info(backend, json),
        Command::Info { preset: Some(name), ctx, json, .. } => bench::preset_info(&name, ctx, json),
        Command::Bench { model, preset, prompt_tokens, gen_tokens, ctx, kv_cache, backend, json } => {
            let ctx = ctx.unwrap_or_else(|| bench::default_ctx(preset.as_deref(), model.as_deref()));
            bench::bench(&bench::BenchArgs { model, preset, prompt_tokens, gen_tokens, ctx, kv_cache, json, backend })
        }
        Command::Info { model, json, .. } => info::info(&ModelFiles::open(&model_path(model)?)?, json),
        Command::Serve(args) => serve::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Logits { model, tokens, engine } => {
            let files = ModelFiles::open(&hub::resolve(&model)?)?;
            let logits = match engine.device {
                Device::Cpu => {
                    let reference = files.load_reference()?;
                    let mut cache = crate::reference::KvCache::new(&reference.config);
                    reference.forward(&mut cache, &tokens)?
                }
                Device::Gpu => {
                    let ctx = engine.ctx.max(tokens.len());
                    build::gpu_model(&files.config, &files.load_weights()?, engine.backend, ctx, engine.kv_cache)?
                        .forward(&tokens, 0)?
                }
            };
            let out = serde_json::json!({ "tokens": tokens, "logits": logits });
            println!("{out}");
            Ok(())
        }
        Command::Run { model, prompt, max_tokens, temperature, top_p, top_k, seed, chat, system, engine } => {
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
            let mut forward = engine.generator(&files)?;
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

/// Reads every weight, with a spinner on a terminal (a large model takes a while).
pub(crate) fn load_weights(files: &ModelFiles) -> Result<ModelWeights> {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(format!("loading {}", files.path.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let weights = files.load_weights();
    spinner.finish_and_clear();
    weights
}
