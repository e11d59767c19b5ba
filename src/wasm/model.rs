//! A model on the browser's GPU: logits, tokenization, chat templates and streamed generation.

use super::{js_error, to_js};
use crate::config::ModelConfig;
use crate::engine::{token_limit, FinishReason, GenerateOptions, TextStream};
use crate::gpu::generator::GpuGenerator;
use crate::gpu::model::GpuModel;
use crate::sampler::SamplingParams;
use crate::tokenizer::{Message, Tokenizer};
use crate::{Error, Result};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

pub(crate) struct Inner {
    pub generator: GpuGenerator,
    pub tokenizer: Option<Tokenizer>,
    pub stop_token_ids: Vec<u32>,
    pub config: ModelConfig,
    pub format: String,
}

/// The result of an error scope the load ran in.
pub(crate) type LoadCheck = std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>;

/// A loaded model. One request runs at a time; the JS layer queues the others.
#[wasm_bindgen]
pub struct Model {
    inner: Rc<RefCell<Inner>>,
    /// Errors the device raised while the model was built, awaited by `ready`.
    checks: RefCell<Vec<LoadCheck>>,
}

/// Generation options as JS passes them (camelCase), all optional.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct JsGenerateOptions {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    stop: Vec<String>,
}

impl JsGenerateOptions {
    fn into_options(self, stop_token_ids: Vec<u32>) -> Result<GenerateOptions> {
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(0.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            seed: self.seed.unwrap_or(0),
        };
        sampling.check()?;
        Ok(GenerateOptions { max_tokens: self.max_tokens.unwrap_or(128), sampling, stop: self.stop, stop_token_ids })
    }
}

impl Model {
    /// `stop_token_ids`: as [`ModelFiles::stop_token_ids`] gives them.
    pub(crate) fn from_parts(
        gpu_model: GpuModel,
        tokenizer: Option<Tokenizer>,
        stop_token_ids: Vec<u32>,
        format: String,
    ) -> Result<Model> {
        let config = gpu_model.config.clone();
        let generator = GpuGenerator::new(gpu_model)?;
        let inner = Inner { generator, tokenizer, stop_token_ids, config, format };
        Ok(Model { inner: Rc::new(RefCell::new(inner)), checks: RefCell::new(vec![]) })
    }

    /// Error-scope results that `ready` must see before the model is used.
    pub(crate) fn await_before_use(&self, checks: Vec<LoadCheck>) {
        self.checks.borrow_mut().extend(checks);
    }

    fn tokenizer(&self) -> Result<std::cell::Ref<'_, Tokenizer>> {
        std::cell::Ref::filter_map(self.inner.borrow(), |i| i.tokenizer.as_ref())
            .map_err(|_| Error::Tokenizer("this model has no tokenizer: pass token ids".into()))
    }
}

/// `performance.now()` of the page or worker (milliseconds, sub-millisecond resolution).
fn now() -> f64 {
    let performance = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).unwrap_or(JsValue::UNDEFINED);
    js_sys::Reflect::get(&performance, &"now".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .and_then(|f| f.call0(&performance).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or_else(js_sys::Date::now)
}

#[wasm_bindgen]
impl Model {
    /// Resolves once the model is on the device and every kernel has compiled; rejects with
    /// what went wrong otherwise (the browser reports both asynchronously): a kernel the
    /// browser rejects, a buffer beyond the device's limits, memory running out.
    pub async fn ready(&self) -> Result<(), JsError> {
        let checks = std::mem::take(&mut *self.checks.borrow_mut());
        for check in checks {
            if let Some(e) = check.await {
                return Err(JsError::new(&format!("the GPU could not hold the model: {e}")));
            }
        }
        let gpu = self.inner.borrow().generator.model.gpu.clone();
        gpu.compile_errors().await.map_err(js_error)
    }

    /// Family, sizes and memory of the model, as a plain object.
    pub fn info(&self) -> JsValue {
        let inner = self.inner.borrow();
        let c = &inner.config;
        let (total, active) = c.parameter_counts();
        let m = &inner.generator.model;
        to_js(&serde_json::json!({
            "family": c.family,
            "format": inner.format,
            "layers": c.num_layers,
            "hiddenSize": c.hidden_size,
            "vocabSize": c.vocab_size,
            "experts": c.moe.as_ref().map(|m| m.num_experts),
            "topK": c.moe.as_ref().map(|m| m.top_k),
            "parameters": total,
            "activeParameters": active,
            "contextLength": m.max_ctx,
            "weightBytes": m.weight_bytes,
            "kvCacheBytes": m.kv_bytes,
            "hasTokenizer": inner.tokenizer.is_some(),
            "hasChatTemplate": inner.tokenizer.as_ref().is_some_and(|t| t.chat_template.is_some()),
        }))
    }

    /// Token ids of `text` (BOS prepended when the tokenizer asks for it and `add_bos`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, JsError> {
        self.tokenizer().and_then(|t| t.encode(text, add_bos)).map_err(js_error)
    }

    pub fn decode(&self, ids: Vec<u32>) -> Result<String, JsError> {
        self.tokenizer().and_then(|t| t.decode(&ids)).map_err(js_error)
    }

    /// The prompt text of `messages` (`[{role, content}]`) under the model's chat template.
    #[wasm_bindgen(js_name = applyChatTemplate)]
    pub fn apply_chat_template(&self, messages: JsValue, add_generation_prompt: bool) -> Result<String, JsError> {
        let messages: Vec<Message> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| JsError::new(&format!("messages must be [{{role, content}}] objects: {e}")))?;
        self.tokenizer().and_then(|t| t.apply_chat_template(&messages, add_generation_prompt)).map_err(js_error)
    }

    /// The logits of every position of `tokens` (from position 0), flattened `[T * vocab]`.
    // Holding the borrow across the awaits is the point: it marks the model busy, and a second
    // request meanwhile gets `busy`'s error instead of interleaving with this one.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn logits(&self, tokens: Vec<u32>) -> Result<js_sys::Float32Array, JsError> {
        let inner = self.busy()?;
        let inner = inner.borrow();
        let model = &inner.generator.model;
        let vocab = model.config.vocab_size;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(JsError::new(&format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        if tokens.is_empty() || tokens.len() > model.max_ctx as usize {
            return Err(JsError::new(&format!("logits need 1 to {} tokens, got {}", model.max_ctx, tokens.len())));
        }
        let rows = model.forward_async(&tokens, 0).await.map_err(js_error)?;
        Ok(js_sys::Float32Array::from(rows.concat().as_slice()))
    }

    /// Milliseconds each kernel of one decode step takes, by kernel, summed over the step's
    /// dispatches (each run alone and waited for): where a browser's time goes.
    #[allow(clippy::await_holding_refcell_ref)] // as in `logits`
    pub async fn profile(&self) -> Result<JsValue, JsError> {
        let inner = self.busy()?;
        let inner = inner.borrow();
        let model = &inner.generator.model;
        let gpu = &model.gpu;
        model.step.set(gpu, 1, 0);
        let mut totals: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
        for op in &model.decode_ops {
            let started = now();
            crate::gpu::submit(gpu, &[op]);
            let (tx, rx) = futures_channel::oneshot::channel();
            gpu.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            rx.await.map_err(|_| JsError::new("the GPU never finished"))?;
            let entry = totals.entry(op.label).or_default();
            entry.0 += now() - started;
            entry.1 += 1;
        }
        let rows: Vec<_> = totals
            .into_iter()
            .map(|(kernel, (ms, dispatches))| serde_json::json!({ "kernel": kernel, "ms": ms, "dispatches": dispatches }))
            .collect();
        Ok(to_js(&serde_json::Value::Array(rows)))
    }

    /// Generates from `prompt` (text, tokenized here with BOS; or an array of token ids),
    /// calling `on_text(piece)` as text forms. Stops at an end token, a stop string,
    /// `maxTokens`, a full context, or when `signal` is aborted (checked before every token).
    /// Resolves to `{text, finishReason, promptTokens, completionTokens, prefillMs, decodeMs,
    /// prefillTokensPerSecond, decodeTokensPerSecond}`.
    #[allow(clippy::await_holding_refcell_ref)] // as in `logits`
    pub async fn generate(
        &self,
        prompt: JsValue,
        options: JsValue,
        on_text: js_sys::Function,
        signal: Option<web_sys::AbortSignal>,
    ) -> Result<JsValue, JsError> {
        let cell = self.busy()?;
        let mut guard = cell.borrow_mut();
        let inner = &mut *guard;
        let prompt: Vec<u32> = match prompt.as_string() {
            Some(text) => self.encode_with(inner, &text)?,
            None => serde_wasm_bindgen::from_value(prompt)
                .map_err(|_| JsError::new("prompt must be a string or an array of token ids"))?,
        };
        let options: JsGenerateOptions = match options.is_undefined() || options.is_null() {
            true => JsGenerateOptions::default(),
            false => serde_wasm_bindgen::from_value(options).map_err(|e| JsError::new(&format!("options: {e}")))?,
        };
        let options = options.into_options(inner.stop_token_ids.clone()).map_err(js_error)?;
        let tokenizer = inner.tokenizer.as_ref().ok_or_else(|| JsError::new("this model has no tokenizer"))?;
        let generator = &mut inner.generator;
        let limit = token_limit(generator.model.max_ctx as usize, &prompt, &options).map_err(js_error)?;

        let started = now();
        generator.start(&prompt, &options.sampling, limit).map_err(js_error)?;
        let mut text = TextStream::new(tokenizer, &options, limit);
        let mut first_token_at = None;
        while !text.is_done() {
            if signal.as_ref().is_some_and(|s| s.aborted()) {
                text.cancel();
                break;
            }
            let token = generator.next_token_async().await.map_err(js_error)?;
            first_token_at.get_or_insert_with(now);
            if let Some(piece) = text.push(token).map_err(js_error)? {
                on_text.call1(&JsValue::NULL, &JsValue::from_str(&piece)).map_err(|e| {
                    JsError::new(&format!("onText threw: {}", e.as_string().unwrap_or_else(|| format!("{e:?}"))))
                })?;
            }
        }
        let finished = now();
        let (tail, completion) = text.finish(prompt.len()).map_err(js_error)?;
        if let Some(tail) = tail {
            let _ = on_text.call1(&JsValue::NULL, &JsValue::from_str(&tail));
        }
        let first = first_token_at.unwrap_or(finished);
        let (prefill_ms, decode_ms) = (first - started, finished - first);
        // The first token comes out of prefill; the rest are decode steps.
        let decoded = completion.tokens.len().saturating_sub(1);
        let per_second = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1000.0 / ms } else { 0.0 };
        Ok(to_js(&serde_json::json!({
            "text": completion.text,
            "finishReason": match completion.finish_reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
                FinishReason::Cancelled => "abort",
            },
            "promptTokens": completion.prompt_tokens,
            "completionTokens": completion.tokens.len(),
            "tokens": completion.tokens,
            "prefillMs": prefill_ms,
            "decodeMs": decode_ms,
            "prefillTokensPerSecond": per_second(prompt.len(), prefill_ms),
            "decodeTokensPerSecond": per_second(decoded, decode_ms),
        })))
    }
}

impl Model {
    /// The shared state, or an error when a request is already running on this model.
    fn busy(&self) -> Result<Rc<RefCell<Inner>>, JsError> {
        match self.inner.try_borrow_mut() {
            Ok(_) => Ok(self.inner.clone()),
            Err(_) => Err(JsError::new("another request is running on this model; wait for it (flint.js queues them)")),
        }
    }

    fn encode_with(&self, inner: &Inner, text: &str) -> Result<Vec<u32>, JsError> {
        let tokenizer = inner.tokenizer.as_ref().ok_or_else(|| JsError::new("this model has no tokenizer"))?;
        tokenizer.encode(text, true).map_err(js_error)
    }
}
