//! Quantized formats: ggml block formats (dequantization) and, later, flint's INT4 format.

pub mod ggml;
