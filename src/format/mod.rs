//! File formats below the weights: parsers that read a checkpoint's header and directory
//! without knowing what a model is.

pub mod gguf;
