//! Weight files: byte sources, the safetensors and GGUF readers, and family tensor names.
//!
//! Every reader implements [`TensorSource`]: a set of named tensors, each with a row-major
//! shape (outermost dimension first, as PyTorch writes it) and a way to dequantize to f32.
//! Readers check every offset, size and dtype against the file before any read, so a
//! truncated or lying file is an error, never an out-of-bounds access.

pub mod gguf;
pub mod gptq;
#[cfg(not(target_arch = "wasm32"))]
pub mod gptq_writer;
pub mod model;
pub mod names;
pub mod safetensors;
pub mod tree;

pub use crate::tensor::{Bytes, DType, Tensor};

use crate::quant::packed::PackedMatrix;
use crate::Result;

/// A set of named tensors.
pub trait TensorSource: Send + Sync {
    /// Every tensor name, in file order.
    fn names(&self) -> Vec<String>;
    /// Row-major shape (outermost first) of a tensor, or `None` when absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The element type of a tensor, or `None` when absent.
    fn dtype(&self, name: &str) -> Option<DType>;
    /// The tensor dequantized to f32; `Error::MissingTensor` when absent.
    fn load_f32(&self, name: &str) -> Result<Tensor>;
    /// Bytes the tensors take in the file.
    fn size_in_bytes(&self) -> u64;

    /// The tensor as the GPU kernels read it: `cols` = the last dimension, `rows` = the product
    /// of the others (a stacked `[E, R, C]` becomes `[E * R, C]`). This default dequantizes
    /// with [`TensorSource::load_f32`] and returns `Format::F32`; quantized readers override it
    /// to repack their blocks without loss (GGUF, GPTQ).
    fn load_packed(&self, name: &str) -> Result<PackedMatrix> {
        Ok(PackedMatrix::from_tensor(&self.load_f32(name)?))
    }

    fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }
}
