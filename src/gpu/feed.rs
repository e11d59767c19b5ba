//! Weights arriving on the GPU part by part: the embeddings, then each layer, then the head.
//!
//! A [`WeightFeed`] hands [`GpuModel::from_feed`](super::model::GpuModel::from_feed) one part at a
//! time, already in GPU buffers, so no caller ever needs the whole model in host memory:
//! - [`HostFeed`] uploads host-side parts ([`LayerWeights`], [`PackedMatrix`]) as a loader yields
//!   them, each dropped once uploaded: from a whole [`ModelWeights`], from a [`TensorSource`]
//!   layer by layer, or from any closures (a browser streaming tensor groups over the network);
//! - `crate::gpu::generated::GeneratedFeed` writes seeded INT4 weights on the device itself.
//!
//! Callers that cannot lend a blocking feed (an async fetch between parts) drive
//! [`GpuModelBuilder`](super::model::GpuModelBuilder) directly with the same parts.

use super::matrix::GpuMatrix;
use super::Gpu;
use crate::config::ModelConfig;
use crate::quant::packed::PackedMatrix;
use crate::weights::model::{LayerWeights, ModelWeights};
use crate::weights::names::Names;
use crate::weights::tree::{Ffn, Layer, Linear, Mlp, Moe};
use crate::weights::TensorSource;
use crate::{Error, Result};
use std::borrow::Cow;

/// The weight tree on the GPU (see `weights::tree`): matrices in [`GpuMatrix`], vectors in
/// `f32` storage buffers; stacked experts are uploaded in whole experts.
pub type GpuLinear = Linear<GpuMatrix, wgpu::Buffer>;
pub type GpuMlp = Mlp<GpuMatrix>;
pub type GpuMoe = Moe<GpuMatrix, wgpu::Buffer>;
pub type GpuFfn = Ffn<GpuMatrix, wgpu::Buffer>;
pub type GpuLayerWeights = Layer<GpuMatrix, wgpu::Buffer>;

/// The end of the model: the final norm's weight (on the host: the model folds the logits
/// multiplier into it before upload) and the output projection (`None` when tied).
pub struct GpuHead {
    pub final_norm: Vec<f32>,
    pub lm_head: Option<GpuMatrix>,
}

/// A source of a model's weights on the GPU, asked for each part once, in order: `embed`,
/// `layer(0)` .. `layer(L - 1)`, `head`.
pub trait WeightFeed {
    fn embed(&mut self, gpu: &Gpu) -> Result<GpuMatrix>;
    fn layer(&mut self, gpu: &Gpu, l: usize) -> Result<GpuLayerWeights>;
    fn head(&mut self, gpu: &Gpu) -> Result<GpuHead>;
}

/// Uploads `m`, split (where a binding requires) only at multiples of `rows_per_unit` rows.
pub fn upload_matrix(gpu: &Gpu, m: &PackedMatrix, rows_per_unit: usize) -> Result<GpuMatrix> {
    GpuMatrix::upload_with_limit(gpu, m, rows_per_unit, gpu.max_binding_bytes())
}

/// Uploads one host-side layer; stacked experts are split only between experts.
pub fn upload_layer(gpu: &Gpu, w: &LayerWeights) -> Result<GpuLayerWeights> {
    let experts = match &w.ffn {
        Ffn::Moe(m) => m.router.rows,
        Ffn::Dense(_) => 1,
    };
    let matrix = |m: &PackedMatrix, units: usize| {
        if units == 0 || !m.rows.is_multiple_of(units) {
            return Err(Error::Gpu(format!("a matrix of {} rows is not {units} equal experts", m.rows)));
        }
        upload_matrix(gpu, m, m.rows / units)
    };
    w.try_map(experts, matrix, |v| Ok(gpu.storage("norm or bias", v)))
}

/// The host-side head: the final norm's weight and the output projection (`None` when tied).
pub type HostHead<'a> = (Cow<'a, [f32]>, Option<Cow<'a, PackedMatrix>>);

type Part<'a, T> = Box<dyn FnMut() -> Result<T> + 'a>;
type LayerPart<'a> = Box<dyn FnMut(usize) -> Result<Cow<'a, LayerWeights>> + 'a>;

/// A [`WeightFeed`] over host-side parts: each part is asked for when the model needs it,
/// uploaded, and dropped (when owned) before the next is asked for.
pub struct HostFeed<'a> {
    embed: Part<'a, Cow<'a, PackedMatrix>>,
    layer: LayerPart<'a>,
    head: Part<'a, HostHead<'a>>,
}

impl<'a> HostFeed<'a> {
    /// A feed from three closures: the embeddings, layer `l`, the head.
    pub fn new(
        embed: impl FnMut() -> Result<Cow<'a, PackedMatrix>> + 'a,
        layer: impl FnMut(usize) -> Result<Cow<'a, LayerWeights>> + 'a,
        head: impl FnMut() -> Result<HostHead<'a>> + 'a,
    ) -> Self {
        HostFeed { embed: Box::new(embed), layer: Box::new(layer), head: Box::new(head) }
    }

    /// A feed lending the parts of weights already in memory (nothing is copied on the host).
    pub fn from_weights(w: &'a ModelWeights) -> Self {
        HostFeed::new(
            || Ok(Cow::Borrowed(&w.embed)),
            |l| {
                w.layers.get(l).map(Cow::Borrowed).ok_or_else(|| {
                    Error::Request(format!("layer {l} does not exist (the weights hold {})", w.layers.len()))
                })
            },
            || Ok((Cow::Borrowed(&w.final_norm[..]), w.lm_head.as_ref().map(Cow::Borrowed))),
        )
    }

    /// A feed loading each part from `src` when it is asked for: the host holds one layer at a time.
    pub fn from_source(config: &'a ModelConfig, src: &'a dyn TensorSource, names: &'a Names) -> Self {
        HostFeed::new(
            move || ModelWeights::load_embed(config, src, names).map(Cow::Owned),
            move |l| LayerWeights::load(config, src, names, l).map(Cow::Owned),
            move || {
                let (norm, head) = ModelWeights::load_head(config, src, names)?;
                Ok((Cow::Owned(norm), head.map(Cow::Owned)))
            },
        )
    }
}

impl WeightFeed for HostFeed<'_> {
    fn embed(&mut self, gpu: &Gpu) -> Result<GpuMatrix> {
        upload_matrix(gpu, &*(self.embed)()?, 1)
    }

    fn layer(&mut self, gpu: &Gpu, l: usize) -> Result<GpuLayerWeights> {
        upload_layer(gpu, &*(self.layer)(l)?)
    }

    fn head(&mut self, gpu: &Gpu) -> Result<GpuHead> {
        let (final_norm, lm_head) = (self.head)()?;
        Ok(GpuHead {
            final_norm: final_norm.into_owned(),
            lm_head: lm_head.map(|m| upload_matrix(gpu, &m, 1)).transpose()?,
        })
    }
}
