//! `flint serve`: loads the model, starts the engine worker, serves the OpenAI API.

use super::{load_weights, model_path, EngineArgs};
use crate::engine::build::{self, Device};
use crate::engine::ModelFiles;
use crate::server::worker::{Engine, Stats};
use crate::server::ServerConfig;
use crate::{Error, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

pub const EXAMPLES: &str = "Examples:
  flint serve --model ~/.cache/flint/models/SmolLM2-135M-Instruct.Q4_1.gguf --port 8080
  flint serve --model ./my-model --api-key secret --cors https://app.example.com

Then point an OpenAI client at it:
  from openai import OpenAI
  client = OpenAI(base_url=\"http://127.0.0.1:8080/v1\", api_key=\"secret\")
  client.chat.completions.create(model=\"SmolLM2-135M-Instruct.Q4_1\", messages=[{\"role\": \"user\", \"content\": \"Hi\"}])

The model's name is the file or folder name without extension (see GET /v1/models), or --served-model-name.";

#[derive(Args)]
pub struct ServeArgs {
    /// A Hugging Face model folder, a .gguf file, or a Hub repo id (default: SmolLM2-135M-Instruct from the cache).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 requests (default: $FLINT_API_KEY, else none).
    #[arg(long)]
    api_key: Option<String>,
    /// Allow browser calls from this origin (`*` for any).
    #[arg(long)]
    cors: Option<String>,
    /// Requests queued or running at once; more are refused with 429.
    #[arg(long, default_value_t = 64)]
    max_concurrent: usize,
    /// The `model` name clients use (default: the file or folder name without extension).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print the listening address as one JSON line on stdout (for scripts).
    #[arg(long)]
    json: bool,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if args.max_concurrent == 0 {
        return Err(Error::Request("--max-concurrent must be at least 1".into()));
    }
    let path = model_path(args.model)?;
    let mut files = ModelFiles::open(&path)?;
    let stop_token_ids = files.stop_token_ids();
    let tokenizer = Arc::new(
        files.tokenizer.take().ok_or_else(|| Error::Tokenizer(format!("{} has no tokenizer", path.display())))?,
    );
    let model_id = args
        .served_model_name
        .unwrap_or_else(|| path.file_stem().map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned()));
    // The GPU's KV cache as `build` sizes it; the CPU reference holds the whole context.
    let context = match args.engine.device {
        Device::Gpu => build::sizes(&files.config, args.engine.ctx, args.engine.kv_cache).ctx as usize,
        Device::Cpu => files.config.max_position_embeddings,
    };
    let weights = load_weights(&files)?;
    let stats = Arc::new(Stats::default());
    let (config, e) = (files.config.clone(), args.engine);
    let engine = Engine::start(
        move || build::generator(&config, &weights, e.device, e.backend, e.ctx, e.kv_cache),
        tokenizer.clone(),
        stats.clone(),
    )?;
    let server = ServerConfig {
        host: args.host,
        port: args.port,
        api_key: args.api_key.or_else(|| std::env::var("FLINT_API_KEY").ok()).filter(|k| !k.is_empty()),
        cors: args.cors,
        max_concurrent: args.max_concurrent,
        model_id: model_id.clone(),
        context,
        body_limit: args.max_body_bytes,
    };
    let json = args.json;
    crate::server::serve(server, engine, stats, tokenizer, stop_token_ids, move |addr| {
        if json {
            println!("{}", serde_json::json!({ "address": addr.to_string(), "model": model_id, "context": context }));
        }
        // Always on stderr, in one fixed form that scripts and tests read.
        eprintln!("flint: serving `{model_id}` on http://{addr}/v1 (context {context})");
    })
}
