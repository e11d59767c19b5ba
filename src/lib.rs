//! flint: an edge runtime for sparse Mixture-of-Experts language models.

pub mod config;
pub mod error;
pub mod gpu;
pub mod quant;
pub mod reference;
pub mod tokenizer;
pub mod weights;

pub use config::ModelConfig;
pub use error::{Error, Result};
pub mod engine;
pub mod model;
pub mod sampler;

pub use engine::{generate, Completion, FinishReason, GenerateOptions};
pub use model::ModelFiles;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod cli;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod server;

/// Where flint keeps fetched models and tokenizers: `$FLINT_CACHE`, else `~/.cache/flint`.
pub fn cache_dir() -> std::path::PathBuf {
    match std::env::var_os("FLINT_CACHE") {
        Some(dir) => dir.into(),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/flint"),
    }
}
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub mod wasm;
