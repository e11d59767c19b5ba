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
use crate::weights::model::{FfnWeights, LayerWeights, LinearWeights, MlpWeights, ModelWeights};
use crate::weights::names::Names;
use crate::weights::TensorSource;
use crate::{Error, Result};
use std::borrow::Cow;

/// A linear layer on the GPU.
pub struct GpuLinear {
    pub weight: GpuMatrix,
    /// `f32 [rows]`.
    pub bias: Option<wgpu::Buffer>,
}

/// A SwiGLU FFN, or `E` of them stacked by rows (uploaded in whole experts).
pub struct GpuMlp {
    pub gate: GpuMatrix,
    pub up: GpuMatrix,
    pub down: GpuMatrix,
}

pub struct GpuMoe {
    /// `[E, H]`.
    pub router: GpuMatrix,
    pub experts: GpuMlp,
    pub shared: Option<GpuMlp>,
    /// `[1, H]`.
    pub shared_gate: Option<GpuMatrix>,
}

// One per layer: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum GpuFfn {
    Dense(GpuMlp),
    Moe(Box<GpuMoe>),
}

/// The weights of one layer on the GPU; vectors are `f32` storage buffers.
pub struct GpuLayerWeights {
    pub attn_norm: wgpu::Buffer,
    pub q: GpuLinear,
    pub k: GpuLinear,
    pub v: GpuLinear,
    pub o: GpuLinear,
    /// The q and k norms' weights, where the family has them.
    pub qk_norm: Option<(wgpu::Buffer, wgpu::Buffer)>,
    pub ffn_norm: wgpu::Buffer,
    pub ffn: GpuFfn,
}

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

impl GpuMlp {
    pub fn matrices(&self) -> [&GpuMatrix; 3] {
        [&self.gate, &self.up, &self.down]
    }
}

impl GpuLayerWeights {
    /// Every weight matrix of the layer.
    pub fn matrices(&self) -> Vec<&GpuMatrix> {
        let mut v = vec![&self.q.weight, &self.k.weight, &self.v.weight, &self.o.weight];
        match &self.ffn {
            GpuFfn::Dense(m) => v.extend(m.matrices()),
            GpuFfn::Moe(m) => {
                v.push(&m.router);
                v.extend(m.experts.matrices());
                v.extend(m.shared.iter().flat_map(|s| s.matrices()));
                v.extend(m.shared_gate.iter());
            }
        }
        v
    }
}

/// Uploads `m`, split (where a binding requires) only at multiples of `rows_per_unit` rows.
pub fn upload_matrix(gpu: &Gpu, m: &PackedMatrix, rows_per_unit: usize) -> Result<GpuMatrix> {
    GpuMatrix::upload_with_limit(gpu, m, rows_per_unit, gpu.max_binding_bytes())
}

fn upload_linear(gpu: &Gpu, l: &LinearWeights) -> Result<GpuLinear> {
    Ok(GpuLinear { weight: upload_matrix(gpu, &l.weight, 1)?, bias: l.bias.as_ref().map(|b| gpu.storage("bias", b)) })
}

fn upload_mlp(gpu: &Gpu, m: &MlpWeights, gate_unit: usize, down_unit: usize) -> Result<GpuMlp> {
    Ok(GpuMlp {
        gate: upload_matrix(gpu, &m.gate, gate_unit)?,
        up: upload_matrix(gpu, &m.up, gate_unit)?,
        down: upload_matrix(gpu, &m.down, down_unit)?,
    })
}

/// Uploads one host-side layer; stacked experts are split only between experts.
pub fn upload_layer(gpu: &Gpu, w: &LayerWeights) -> Result<GpuLayerWeights> {
    let ffn = match &w.ffn {
        FfnWeights::Dense(m) => GpuFfn::Dense(upload_mlp(gpu, m, 1, 1)?),
        FfnWeights::Moe(m) => {
            let e = m.router.rows;
            if e == 0 || !m.experts.gate.rows.is_multiple_of(e) || !m.experts.down.rows.is_multiple_of(e) {
                return Err(Error::Gpu(format!(
                    "experts of {} gate rows and {} down rows are not {e} equal experts",
                    m.experts.gate.rows, m.experts.down.rows
                )));
            }
            GpuFfn::Moe(Box::new(GpuMoe {
                router: upload_matrix(gpu, &m.router, 1)?,
                experts: upload_mlp(gpu, &m.experts, m.experts.gate.rows / e, m.experts.down.rows / e)?,
                shared: m.shared.as_ref().map(|s| upload_mlp(gpu, s, 1, 1)).transpose()?,
                shared_gate: m.shared_gate.as_ref().map(|s| upload_matrix(gpu, s, 1)).transpose()?,
            }))
        }
    };
    Ok(GpuLayerWeights {
        attn_norm: gpu.storage("attn norm", &w.attn_norm),
        q: upload_linear(gpu, &w.q)?,
        k: upload_linear(gpu, &w.k)?,
        v: upload_linear(gpu, &w.v)?,
        o: upload_linear(gpu, &w.o)?,
        qk_norm: match (&w.q_norm, &w.k_norm) {
            (Some(qn), Some(kn)) => Some((gpu.storage("q norm", qn), gpu.storage("k norm", kn))),
            _ => None,
        },
        ffn_norm: gpu.storage("ffn norm", &w.ffn_norm),
        ffn,
    })
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
