//! flint: an edge runtime for sparse Mixture-of-Experts language models.
//!
//! Modules in dependency order; each imports only from the ones above it (tests aside):
//! - `error`, `tensor` (dtypes, ggml's type table, file bytes), `format` (file parsers);
//! - `config` (the normalized architecture), `sampler`, `ops` (each operation on f32 slices);
//! - `weights` (tensor sources, the weight tree), `quant` (packed formats), `tokenizer`;
//! - `reference` (the CPU forward pass) and `gpu` (kernels, the GPU model and generator);
//! - `engine` (opening files, building models and generators, the generate loop);
//! - the surfaces: `cli`, `server` (feature `cli`, native) and `wasm` (feature `wasm`, wasm32).

pub mod error;
pub mod format;
pub mod tensor;

pub mod config;
pub mod ops;
pub mod sampler;

pub mod quant;
pub mod tokenizer;
pub mod weights;

pub mod gpu;
pub mod reference;

pub mod engine;

#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod cli;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod server;
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub mod wasm;

pub use config::ModelConfig;
pub use engine::{generate, Completion, FinishReason, GenerateOptions, ModelFiles};
pub use error::{Error, Result};

/// Where flint keeps fetched models and tokenizers: `$FLINT_CACHE`, else `~/.cache/flint`.
pub fn cache_dir() -> std::path::PathBuf {
    match std::env::var_os("FLINT_CACHE") {
        Some(dir) => dir.into(),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/flint"),
    }
}
