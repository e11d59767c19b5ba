//! Loading a model part by part from JS ([`StreamedModel`] behind wasm-bindgen): JS reads the
//! headers from file prefixes, asks for each part's byte spans, and hands them over in turn.

use super::model::{LoadCheck, Model};
use super::{js_error, Engine};
use crate::config::ModelConfig;
use crate::engine::build::{self, Capacity};
use crate::engine::streamed::StreamedModel;
use crate::gpu::kernels::KvFormat;
use crate::tokenizer::Tokenizer;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
pub struct ModelLoader {
    inner: StreamedModel,
    /// Out-of-memory and validation errors while the model is built (a buffer larger than the
    /// device allows, memory running out), reported by `Model.ready`.
    scopes: LoadScopes,
}

/// The error scopes a load runs in, opened before anything is created on the device. Scopes
/// must close in the reverse order they opened, also when a load fails half-way (wgpu panics
/// otherwise), and two loads must not interleave (flint.js uploads one model at a time).
struct LoadScopes(Vec<wgpu::ErrorScopeGuard>);

impl LoadScopes {
    fn open(engine: &Engine) -> Self {
        let device = &engine.gpu.device;
        LoadScopes(vec![
            device.push_error_scope(wgpu::ErrorFilter::OutOfMemory),
            device.push_error_scope(wgpu::ErrorFilter::Validation),
        ])
    }

    /// Closes the scopes; their results, to await.
    fn close(mut self) -> Vec<LoadCheck> {
        std::iter::from_fn(|| self.0.pop()).map(|s| Box::pin(s.pop()) as LoadCheck).collect()
    }
}

impl Drop for LoadScopes {
    fn drop(&mut self) {
        while let Some(scope) = self.0.pop() {
            drop(scope);
        }
    }
}

/// The prefill chunk and KV cache for a config, the context asked for (0: 4096) and the cache
/// format (`"f16"`, `"f32"`, or `""`: f16).
fn sizes(ctx: u32, kv_cache: &str) -> Result<impl FnOnce(&ModelConfig) -> Capacity, JsError> {
    let kv = match kv_cache {
        "" | "f16" => KvFormat::F16,
        "f32" => KvFormat::F32,
        other => return Err(JsError::new(&format!("kvCache must be \"f16\" or \"f32\", got {other:?}"))),
    };
    Ok(move |config: &ModelConfig| build::sizes(config, if ctx == 0 { 4096 } else { ctx as usize }, kv))
}

#[wasm_bindgen]
impl ModelLoader {
    /// A GGUF file of `file_len` bytes, from a prefix holding its header. Fails (saying
    /// "truncated") when `prefix` ends inside the header: read a longer prefix and retry.
    pub fn gguf(
        engine: &Engine,
        prefix: &[u8],
        file_len: f64,
        ctx: u32,
        kv_cache: &str,
    ) -> Result<ModelLoader, JsError> {
        let sizes = sizes(ctx, kv_cache)?;
        let scopes = LoadScopes::open(engine);
        let inner = StreamedModel::gguf(engine.gpu.clone(), prefix, file_len as u64, sizes).map_err(js_error)?;
        Ok(ModelLoader { inner, scopes })
    }

    /// A Hugging Face folder: config.json's text, the tokenizer files if any, and per
    /// safetensors file its name, a prefix holding its header (8 bytes + the header's length)
    /// and its length.
    #[allow(clippy::too_many_arguments)] // each is one of the folder's files, as JS holds them
    pub fn safetensors(
        engine: &Engine,
        config_json: &str,
        tokenizer_json: Option<Vec<u8>>,
        tokenizer_config: Option<String>,
        names: Vec<String>,
        prefixes: Vec<js_sys::Uint8Array>,
        lengths: Vec<f64>,
        ctx: u32,
        kv_cache: &str,
    ) -> Result<ModelLoader, JsError> {
        let sizes = sizes(ctx, kv_cache)?;
        let tokenizer = tokenizer_json
            .map(|t| Tokenizer::from_hf_json(&t, tokenizer_config.as_deref()))
            .transpose()
            .map_err(js_error)?;
        let headers = names
            .into_iter()
            .zip(prefixes.iter().map(|p| p.to_vec()))
            .zip(lengths.iter().map(|&l| l as u64))
            .map(|((n, p), l)| (n, p, l))
            .collect();
        let scopes = LoadScopes::open(engine);
        let inner =
            StreamedModel::safetensors(engine.gpu.clone(), config_json, tokenizer, headers, sizes).map_err(js_error)?;
        Ok(ModelLoader { inner, scopes })
    }

    /// Per part, its byte spans `[[file, start, end], ...]`, to be read and given to `addPart`
    /// in order (`file` indexes the files as given; a GGUF is file 0).
    pub fn parts(&self) -> Vec<js_sys::Array> {
        let number = |v: u64| JsValue::from(v as f64);
        self.inner
            .spans()
            .iter()
            .map(|spans| {
                spans.iter().map(|&(f, a, b)| js_sys::Array::of3(&number(f as u64), &number(a), &number(b))).collect()
            })
            .collect()
    }

    /// Part `i`'s bytes, one buffer per span: repacked, uploaded, then dropped.
    #[wasm_bindgen(js_name = addPart)]
    pub fn add_part(&mut self, i: usize, buffers: Vec<js_sys::Uint8Array>) -> Result<(), JsError> {
        self.inner.add(i, buffers.iter().map(|b| b.to_vec()).collect()).map_err(js_error)
    }

    /// The model, once every part has been added; await its `ready()` before use.
    pub fn finish(self) -> Result<Model, JsError> {
        let (model, files) = self.inner.finish().map_err(js_error)?;
        let stop = files.stop_token_ids();
        let model = Model::from_parts(model, files.tokenizer, stop, files.format).map_err(js_error)?;
        // Everything is created: close the scopes.
        model.await_before_use(self.scopes.close());
        Ok(model)
    }
}
