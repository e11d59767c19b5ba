//! A model loaded onto the GPU part by part, so its files are never whole in memory (the
//! browser's wasm memory stops at 4 GiB): the caller parses the headers from prefixes of the
//! files, asks for each part's byte spans, and hands them over in turn; each part is repacked,
//! uploaded and dropped before the next arrives. Works for a GGUF file and for a Hugging Face
//! folder (safetensors, sharded or not, GPTQ or not).
//!
//! Parts, in the order the model is built: the token embeddings, each layer (every tensor whose
//! name starts with the layer's prefix), then the head (the final norm and, when untied, the
//! output projection).

use super::build::Capacity;
use super::files::{hf_tensors, ModelFiles};
use crate::config::ModelConfig;
use crate::format::gguf::GgufFile;
use crate::gpu::feed::{upload_layer, upload_matrix, GpuHead};
use crate::gpu::model::{GpuModel, GpuModelBuilder};
use crate::gpu::Gpu;
use crate::tokenizer::Tokenizer;
use crate::weights::model::{LayerWeights, ModelWeights};
use crate::weights::safetensors::SafetensorsCheckpoint;
use crate::weights::TensorSource;
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

enum Part {
    Embed,
    Layer(usize),
    Head,
}

/// The headers, to which each part's bytes are lent.
enum Headers {
    Gguf(GgufFile),
    Safetensors { checkpoint: SafetensorsCheckpoint, config: serde_json::Value },
}

/// `(file index, start, end)`: a byte span of one of the model's files.
pub type Span = (usize, u64, u64);

pub struct StreamedModel {
    headers: Headers,
    /// Config, names and tokenizer; no tensor data.
    pub files: ModelFiles,
    parts: Vec<(Part, Vec<Span>)>,
    next: usize,
    builder: GpuModelBuilder,
    /// The head, uploaded when its part arrives, given to the builder by `finish`.
    head: Option<GpuHead>,
}

/// The buffers' capacity for a config.
pub trait Sizes: FnOnce(&ModelConfig) -> Capacity {}
impl<F: FnOnce(&ModelConfig) -> Capacity> Sizes for F {}

impl StreamedModel {
    /// A GGUF of `file_len` bytes, from a prefix holding its header. A prefix that ends inside
    /// the header is an error that says "truncated": read a longer prefix and retry.
    pub fn gguf(gpu: Arc<Gpu>, prefix: &[u8], file_len: u64, sizes: impl Sizes) -> Result<Self> {
        let header = GgufFile::from_header(prefix, file_len)?;
        let files = ModelFiles::from_gguf(Path::new("model.gguf"), header.window(0, Vec::new().into()))?;
        let spans = |names: &[String]| header.span_of(names).map(|(a, b)| vec![(0, a, b)]);
        let parts = plan(&files, &header.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>(), spans)?;
        Self::new(gpu, Headers::Gguf(header), files, parts, sizes)
    }

    /// A Hugging Face folder: its config.json, tokenizer (if any), and per safetensors file
    /// `(name, a prefix holding its header, file length)`.
    pub fn safetensors(
        gpu: Arc<Gpu>,
        config_json: &str,
        tokenizer: Option<Tokenizer>,
        headers: Vec<(String, Vec<u8>, u64)>,
        sizes: impl Sizes,
    ) -> Result<Self> {
        let checkpoint = SafetensorsCheckpoint::from_headers(headers)?;
        let config: serde_json::Value = serde_json::from_str(config_json)?;
        let files = ModelFiles::from_hf_parts(Path::new(""), config_json, checkpoint.window(vec![])?, tokenizer)?;
        // Planned on the raw names: a GPTQ weight is its qweight, qzeros, scales and g_idx.
        let parts = plan(&files, &checkpoint.names(), |names| checkpoint.spans_of(names))?;
        Self::new(gpu, Headers::Safetensors { checkpoint, config }, files, parts, sizes)
    }

    fn new(
        gpu: Arc<Gpu>,
        headers: Headers,
        files: ModelFiles,
        parts: Vec<(Part, Vec<Span>)>,
        sizes: impl Sizes,
    ) -> Result<Self> {
        let Capacity { chunk, ctx, kv } = sizes(&files.config);
        let builder = GpuModelBuilder::new(gpu, &files.config, chunk, ctx, kv)?;
        Ok(StreamedModel { headers, files, parts, next: 0, builder, head: None })
    }

    /// The byte spans of each part, to be given to [`StreamedModel::add`] in order.
    pub fn spans(&self) -> Vec<Vec<Span>> {
        self.parts.iter().map(|(_, spans)| spans.clone()).collect()
    }

    /// Part `i`'s bytes, one buffer per span: repacked, uploaded, then dropped.
    pub fn add(&mut self, i: usize, bytes: Vec<Vec<u8>>) -> Result<()> {
        let Some((part, spans)) = self.parts.get(i) else {
            return Err(Error::Request(format!("part {i} does not exist (there are {})", self.parts.len())));
        };
        if i != self.next {
            return Err(Error::Request(format!("part {i} was given; part {} comes next", self.next)));
        }
        if bytes.len() != spans.len() {
            return Err(Error::Request(format!(
                "part {i} has {} spans, but {} buffers came",
                spans.len(),
                bytes.len()
            )));
        }
        for (&(file, start, end), b) in spans.iter().zip(&bytes) {
            if b.len() as u64 != end - start {
                return Err(Error::Request(format!(
                    "part {i} spans bytes {start}..{end} of file #{file}, but {} bytes came",
                    b.len()
                )));
            }
        }
        let src: Box<dyn TensorSource> = match &self.headers {
            Headers::Gguf(header) => {
                let (_, start, _) = spans[0];
                Box::new(header.window(start, bytes.into_iter().next().unwrap_or_default().into()))
            }
            Headers::Safetensors { checkpoint, config } => {
                let windows = spans.iter().zip(bytes).map(|(&(f, start, _), b)| (f, start, b.into())).collect();
                hf_tensors(config, checkpoint.window(windows)?)?.0
            }
        };
        let (config, names, builder) = (&self.files.config, &self.files.names, &mut self.builder);
        let gpu = builder.gpu();
        match part {
            Part::Embed => {
                let m = upload_matrix(gpu, &ModelWeights::load_embed(config, &*src, names)?, 1)?;
                builder.embed(m)?;
            }
            Part::Layer(l) => {
                let w = upload_layer(gpu, &LayerWeights::load(config, &*src, names, *l)?)?;
                builder.layer(w)?;
            }
            Part::Head => {
                let (final_norm, lm_head) = ModelWeights::load_head(config, &*src, names)?;
                let lm_head = lm_head.map(|m| upload_matrix(gpu, &m, 1)).transpose()?;
                self.head = Some(GpuHead { final_norm, lm_head });
            }
        }
        self.next += 1;
        Ok(())
    }

    /// The model, once every part has been added; and the files' config and tokenizer.
    pub fn finish(self) -> Result<(GpuModel, ModelFiles)> {
        match self.head {
            Some(head) if self.next == self.parts.len() => Ok((self.builder.finish(head)?, self.files)),
            _ => Err(Error::Request(format!("{} of {} parts were added", self.next, self.parts.len()))),
        }
    }
}

/// The parts of a model whose tensors are `names`, each with the spans `spans_of` gives.
fn plan(
    files: &ModelFiles,
    names: &[String],
    spans_of: impl Fn(&[String]) -> Result<Vec<Span>>,
) -> Result<Vec<(Part, Vec<Span>)>> {
    // Names are stems: `token_embd` covers `token_embd.weight`.
    let embed = format!("{}.", files.names.embed());
    let layers: Vec<String> = (0..files.config.num_layers).map(|l| files.names.layer_prefix(l)).collect();
    let pick = |what: String, keep: &dyn Fn(&str) -> bool| {
        let chosen: Vec<String> = names.iter().filter(|n| keep(n)).cloned().collect();
        match chosen.is_empty() {
            true => Err(Error::Tensor { name: what, problem: "no tensors in the checkpoint".into() }),
            false => spans_of(&chosen),
        }
    };
    let mut parts = vec![(Part::Embed, pick("the token embeddings".into(), &|n| n.starts_with(&embed))?)];
    for (l, prefix) in layers.iter().enumerate() {
        parts.push((Part::Layer(l), pick(format!("layer {l}"), &|n| n.starts_with(prefix.as_str()))?));
    }
    // Layer prefixes of layers the config does not have also stay out of the head.
    let is_layer = |n: &str| n.starts_with("blk.") || n.starts_with("model.layers.");
    parts.push((Part::Head, pick("the final norm".into(), &|n| !n.starts_with(&embed) && !is_layer(n))?));
    Ok(parts)
}
