//! Loading a GGUF part by part from JS ([`StreamedGguf`] behind wasm-bindgen): JS reads a
//! header prefix, asks for the parts' byte spans, and hands each span over in turn.

use super::model::{context, Model, CHUNK_TOKENS};
use super::{js_error, Engine};
use crate::gpu::streamed::StreamedGguf;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
pub struct GgufLoader {
    inner: StreamedGguf,
}

#[wasm_bindgen]
impl GgufLoader {
    /// Parses the header from the first bytes of a file of `file_len` bytes. Fails (saying
    /// "truncated") when `prefix` ends inside the header: read a longer prefix and retry.
    pub fn open(engine: &Engine, prefix: &[u8], file_len: f64, ctx: u32) -> Result<GgufLoader, JsError> {
        let sizes = |config: &_| {
            let ctx = context(config, ctx);
            (CHUNK_TOKENS.min(ctx), ctx)
        };
        let inner = StreamedGguf::open(engine.gpu.clone(), prefix, file_len as u64, sizes).map_err(js_error)?;
        Ok(GgufLoader { inner })
    }

    /// `[[start, end], ...]`: the byte span of each part, to be given to `addPart` in order.
    pub fn parts(&self) -> Vec<js_sys::Array> {
        self.inner.spans().iter().map(|&(a, b)| js_sys::Array::of2(&(a as f64).into(), &(b as f64).into())).collect()
    }

    /// Part `i`'s bytes (its whole span): repacked, uploaded, then dropped.
    #[wasm_bindgen(js_name = addPart)]
    pub fn add_part(&mut self, i: usize, bytes: Vec<u8>) -> Result<(), JsError> {
        self.inner.add(i, bytes).map_err(js_error)
    }

    /// The model, once every part has been added.
    pub fn finish(self) -> Result<Model, JsError> {
        let (model, files) = self.inner.finish().map_err(js_error)?;
        let stop = files.stop_token_ids();
        Model::from_parts(model, files.tokenizer, stop, files.format).map_err(js_error)
    }
}
