//! Loading a GGUF into GPU buffers part by part, so the whole file never sits in wasm memory
//! (which stops at 4 GiB): JS reads the header, asks for the parts' byte spans, and hands each
//! span over in turn; each part is repacked, uploaded and dropped before the next arrives.
//!
//! Parts, in the order the model is built: the token embeddings, each layer (every tensor named
//! `blk.{l}.*`), then the head (the final norm and, when untied, the output projection).

use super::model::{context, Model, CHUNK_TOKENS};
use super::{js_error, Engine};
use crate::gpu::feed::{upload_layer, upload_matrix, GpuHead};
use crate::gpu::model::GpuModelBuilder;
use crate::model::ModelFiles;
use crate::weights::gguf::GgufFile;
use crate::weights::model::{LayerWeights, ModelWeights};
use crate::{Error, Result};
use std::path::Path;
use wasm_bindgen::prelude::*;

enum Part {
    Embed,
    Layer(usize),
    Head,
}

#[wasm_bindgen]
pub struct GgufLoader {
    /// The header alone: each part's bytes are lent to a window of it.
    header: GgufFile,
    files: ModelFiles,
    /// The parts and their file spans `[start, end)`.
    parts: Vec<(Part, u64, u64)>,
    next: usize,
    builder: Option<GpuModelBuilder>,
    /// The head, uploaded when its part arrives, given to the builder by `finish`.
    pending_head: Option<GpuHead>,
}

#[wasm_bindgen]
impl GgufLoader {
    /// Parses the header from the first bytes of a file of `file_len` bytes. Fails (saying
    /// "truncated") when `prefix` ends inside the header: read a longer prefix and retry.
    pub fn open(engine: &Engine, prefix: &[u8], file_len: f64, ctx: u32) -> Result<GgufLoader, JsError> {
        Self::new(engine, prefix, file_len as u64, ctx).map_err(js_error)
    }

    /// `[[start, end], ...]`: the byte span of each part, to be given to `addPart` in order.
    pub fn parts(&self) -> Vec<js_sys::Array> {
        self.parts.iter().map(|&(_, a, b)| js_sys::Array::of2(&(a as f64).into(), &(b as f64).into())).collect()
    }

    /// Part `i`'s bytes (its whole span): repacked, uploaded, then dropped.
    #[wasm_bindgen(js_name = addPart)]
    pub fn add_part(&mut self, i: usize, bytes: Vec<u8>) -> Result<(), JsError> {
        self.add(i, bytes).map_err(js_error)
    }

    /// The model, once every part has been added.
    pub fn finish(mut self) -> Result<Model, JsError> {
        if self.next != self.parts.len() {
            return Err(JsError::new(&format!("{} of {} parts were added", self.next, self.parts.len())));
        }
        let (Some(builder), Some(head)) = (self.builder.take(), self.pending_head.take()) else {
            return Err(JsError::new("the model was already finished"));
        };
        let model = builder.finish(head);
        let stop = self.files.stop_token_ids();
        Model::from_parts(model.map_err(js_error)?, self.files.tokenizer.take(), stop, self.files.format.clone())
            .map_err(js_error)
    }
}

impl GgufLoader {
    fn new(engine: &Engine, prefix: &[u8], file_len: u64, ctx: u32) -> Result<GgufLoader> {
        let header = GgufFile::from_header(prefix, file_len)?;
        let files = ModelFiles::from_gguf(Path::new("model.gguf"), header.window(0, Vec::new().into()))?;
        let names = header.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        // Names are stems: `token_embd` covers `token_embd.weight`.
        let embed = format!("{}.", files.names.embed());
        let layer_prefix = |l: usize| format!("blk.{l}.");
        let span = |pick: &dyn Fn(&str) -> bool| {
            let chosen: Vec<String> = names.iter().filter(|n| pick(n)).cloned().collect();
            header.span_of(&chosen)
        };
        let mut parts = Vec::with_capacity(files.config.num_layers + 2);
        let (a, b) = span(&|n| n.starts_with(&embed))?;
        parts.push((Part::Embed, a, b));
        for l in 0..files.config.num_layers {
            let p = layer_prefix(l);
            let (a, b) = span(&|n| n.starts_with(&p))?;
            parts.push((Part::Layer(l), a, b));
        }
        let (a, b) = span(&|n| !n.starts_with(&embed) && !n.starts_with("blk."))?;
        parts.push((Part::Head, a, b));
        let ctx = context(&files.config, ctx);
        let builder = GpuModelBuilder::new(engine.gpu.clone(), &files.config, CHUNK_TOKENS.min(ctx), ctx)?;
        Ok(GgufLoader { header, files, parts, next: 0, builder: Some(builder), pending_head: None })
    }

    fn add(&mut self, i: usize, bytes: Vec<u8>) -> Result<()> {
        let Some((part, start, end)) = self.parts.get(i) else {
            return Err(Error::Request(format!("part {i} does not exist (there are {})", self.parts.len())));
        };
        if i != self.next {
            return Err(Error::Request(format!("part {i} was given; part {} comes next", self.next)));
        }
        if bytes.len() as u64 != end - start {
            return Err(Error::Request(format!("part {i} needs bytes {start}..{end}, got {} bytes", bytes.len())));
        }
        let src = self.header.window(*start, bytes.into());
        let (config, names) = (&self.files.config, &self.files.names);
        let builder = self.builder.as_mut().ok_or_else(|| Error::Request("the model was already finished".into()))?;
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
                self.pending_head = Some(GpuHead { final_norm, lm_head });
            }
        }
        self.next += 1;
        Ok(())
    }
}
