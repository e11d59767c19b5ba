//! The bottom layer: element types, dense f32 tensors, ggml's type table and the bytes of a
//! weight file. Everything else builds on these; nothing here imports another flint module
//! except `error`.

pub mod bytes;
pub mod ggml;

pub use bytes::Bytes;

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
}

/// Element types found in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    /// 4-bit indices into IQ4's 16-entry non-linear codebook, blocks of 32.
    IQ4_NL,
    /// IQ4's codebook in 256-element super-blocks with 6-bit sub-block scales.
    IQ4_XS,
    /// OCP microscaling FP4 (E2M1 values, one E8M0 exponent per 32): gpt-oss's expert type.
    MXFP4,
    /// 4-bit groups with f16 scale and offset (GPTQ, and flint's own INT4 format).
    Int4,
}
