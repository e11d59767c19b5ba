//! flint: an edge runtime for sparse Mixture-of-Experts language models.

pub mod config;
pub mod error;
pub mod quant;
pub mod tokenizer;
pub mod weights;

pub use config::ModelConfig;
pub use error::{Error, Result};
