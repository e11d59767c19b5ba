//! Quantized formats: ggml block formats (dequantization), flint's packed GPU weight format
//! (INT4/INT8/F32 matrices, lossless repacking of ggml and GPTQ blocks) and its INT4 quantizer.

pub mod blocks;
pub mod generated;
pub mod ggml;
pub mod gptq_grid;
pub mod packed;
pub mod quantize;
pub mod repack;

pub use packed::{Format, PackedMatrix};
