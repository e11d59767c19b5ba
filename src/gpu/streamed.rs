//! A GGUF loaded onto the GPU part by part, so the whole file is never in memory (the browser's
//! wasm memory stops at 4 GiB): the caller parses the header from a prefix of the file, asks for
//! the parts' byte spans, and hands each span over in turn; each part is repacked, uploaded and
//! dropped before the next arrives.
//!
//! Parts, in the order the model is built: the token embeddings, each layer (every tensor named
//! `blk.{l}.*`), then the head (the final norm and, when untied, the output projection).

use super::feed::{upload_layer, upload_matrix, GpuHead};
use super::model::{GpuModel, GpuModelBuilder};
use super::Gpu;
use crate::config::ModelConfig;
use crate::model::ModelFiles;
use crate::weights::gguf::GgufFile;
use crate::weights::model::{LayerWeights, ModelWeights};
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

enum Part {
    Embed,
    Layer(usize),
    Head,
}

pub struct StreamedGguf {
    /// The header alone: each part's bytes are lent to a window of it.
    header: GgufFile,
    /// Config, names and tokenizer (from the header's metadata); no tensor data.
    pub files: ModelFiles,
    /// The parts and their file spans `[start, end)`.
    parts: Vec<(Part, u64, u64)>,
    next: usize,
    builder: GpuModelBuilder,
    /// The head, uploaded when its part arrives, given to the builder by `finish`.
    head: Option<GpuHead>,
}

impl StreamedGguf {
    /// Parses the header from the first bytes of a file of `file_len` bytes. A prefix that ends
    /// inside the header is an error that says "truncated": read a longer prefix and retry.
    /// `sizes` gives the prefill chunk and the KV cache length for the model's config.
    pub fn open(
        gpu: Arc<Gpu>,
        prefix: &[u8],
        file_len: u64,
        sizes: impl FnOnce(&ModelConfig) -> (u32, u32),
    ) -> Result<Self> {
        let header = GgufFile::from_header(prefix, file_len)?;
        let files = ModelFiles::from_gguf(Path::new("model.gguf"), header.window(0, Vec::new().into()))?;
        let names: Vec<&str> = header.tensors().iter().map(|t| t.name.as_str()).collect();
        // Names are stems: `token_embd` covers `token_embd.weight`.
        let embed = format!("{}.", files.names.embed());
        let span = |what: &str, pick: &dyn Fn(&str) -> bool| {
            let chosen: Vec<String> = names.iter().filter(|n| pick(n)).map(|n| n.to_string()).collect();
            if chosen.is_empty() {
                return Err(Error::Gguf(format!("no tensors for {what}")));
            }
            header.span_of(&chosen)
        };
        let mut parts = Vec::with_capacity(files.config.num_layers + 2);
        let (a, b) = span("the token embeddings", &|n| n.starts_with(&embed))?;
        parts.push((Part::Embed, a, b));
        for l in 0..files.config.num_layers {
            let prefix = format!("blk.{l}.");
            let (a, b) = span(&format!("layer {l}"), &|n| n.starts_with(&prefix))?;
            parts.push((Part::Layer(l), a, b));
        }
        let (a, b) = span("the output norm", &|n| !n.starts_with(&embed) && !n.starts_with("blk."))?;
        parts.push((Part::Head, a, b));
        let (max_tokens, max_ctx) = sizes(&files.config);
        let builder = GpuModelBuilder::new(gpu, &files.config, max_tokens, max_ctx)?;
        Ok(StreamedGguf { header, files, parts, next: 0, builder, head: None })
    }

    /// `[start, end)` file span of each part, to be given to [`StreamedGguf::add`] in order.
    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.parts.iter().map(|&(_, a, b)| (a, b)).collect()
    }

    /// Part `i`'s bytes (its whole span): repacked, uploaded, then dropped.
    pub fn add(&mut self, i: usize, bytes: Vec<u8>) -> Result<()> {
        let Some((part, start, end)) = self.parts.get(i) else {
            return Err(Error::Request(format!("part {i} does not exist (there are {})", self.parts.len())));
        };
        if i != self.next {
            return Err(Error::Request(format!("part {i} was given; part {} comes next", self.next)));
        }
        if bytes.len() as u64 != end - start {
            return Err(Error::Request(format!("part {i} spans bytes {start}..{end}, but {} bytes came", bytes.len())));
        }
        let src = self.header.window(*start, bytes.into());
        let (config, names, builder) = (&self.files.config, &self.files.names, &mut self.builder);
        let gpu = builder.gpu();
        match part {
            Part::Embed => {
                let m = upload_matrix(gpu, &ModelWeights::load_embed(config, &src, names)?, 1)?;
                builder.embed(m)?;
            }
            Part::Layer(l) => {
                let w = upload_layer(gpu, &LayerWeights::load(config, &src, names, *l)?)?;
                builder.layer(w)?;
            }
            Part::Head => {
                let (final_norm, lm_head) = ModelWeights::load_head(config, &src, names)?;
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
