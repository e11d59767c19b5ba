//! A GGUF file's tensors as a [`TensorSource`]: dequantized by `quant::ggml`, or repacked
//! without loss into the formats the kernels read.

use super::{Tensor, TensorSource};
use crate::format::gguf::{GgufFile, TensorInfo};
use crate::quant::ggml;
use crate::quant::packed::{self, PackedMatrix};
use crate::tensor::DType;
use crate::{Error, Result};

impl TensorSource for GgufFile {
    fn names(&self) -> Vec<String> {
        self.tensors().iter().map(|t| t.name.clone()).collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor_info(name).map(TensorInfo::shape)
    }

    fn dtype(&self, name: &str) -> Option<DType> {
        self.tensor_info(name).map(|t| t.dtype)
    }

    fn load_f32(&self, name: &str) -> Result<Tensor> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let (dtype, data) = self.tensor_bytes(name)?;
        let values = ggml::dequantize(dtype, data, info.n_elements as usize).map_err(|e| Error::tensor(name, e))?;
        Ok(Tensor::new(info.shape(), values))
    }

    /// Repacks the tensor's ggml blocks without loss ([`PackedMatrix::from_ggml`]):
    /// `cols = ne[0]`, `rows` = the product of the other dimensions.
    fn load_packed(&self, name: &str) -> Result<PackedMatrix> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let (dtype, data) = self.tensor_bytes(name)?;
        // Every dimension and the element count were checked to fit usize at parse time.
        let cols = info.dims.first().map_or(1, |&d| d as usize);
        let rows = info.dims.iter().skip(1).map(|&d| d as usize).product();
        PackedMatrix::from_ggml(dtype, rows, cols, data).map_err(|e| packed::rename(e, name))
    }

    fn size_in_bytes(&self) -> u64 {
        self.tensors().iter().map(|t| t.n_bytes).sum()
    }
}
