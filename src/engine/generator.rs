//! The [`Generator`] interface and its two implementations: the CPU reference, sampled on the
//! host, and the GPU engine (`gpu::generator::GpuGenerator`), sampled on the device.

#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::generator::GpuGenerator;
use crate::reference::{KvCache, ReferenceModel};
use crate::sampler::{sample, SamplingParams};
use crate::{Error, Result};
use std::sync::Arc;

/// Produces the tokens of one generation: the prompt is processed by `start`, then each
/// `next_token` returns one sampled token. The CPU reference computes each token on demand;
/// the GPU engine samples on the device and may run ahead (pipelined), so a caller that stops
/// early simply discards what was computed past the stop.
pub trait Generator {
    /// The model's context length.
    fn context_len(&self) -> usize;
    /// Starts a new sequence with `prompt`; at most `max_tokens` will be asked for.
    fn start(&mut self, prompt: &[u32], sampling: &SamplingParams, max_tokens: usize) -> Result<()>;
    /// The next token of the sequence.
    fn next_token(&mut self) -> Result<u32>;
}

/// The CPU reference as a [`Generator`].
pub struct CpuGenerator {
    pub model: Arc<ReferenceModel>,
    cache: KvCache,
    sampling: SamplingParams,
    /// Logits of the last processed position.
    logits: Vec<f32>,
    /// The last sampled token, not yet run through the model.
    pending: Option<u32>,
    /// Tokens sampled since `start`.
    step: u64,
}

impl CpuGenerator {
    /// A sequence over `model`; sequences can share one model.
    pub fn new(model: impl Into<Arc<ReferenceModel>>) -> Self {
        let model = model.into();
        let cache = KvCache::new(&model.config);
        CpuGenerator { model, cache, sampling: SamplingParams::default(), logits: vec![], pending: None, step: 0 }
    }
}

impl Generator for CpuGenerator {
    fn context_len(&self) -> usize {
        self.model.config.max_position_embeddings
    }

    fn start(&mut self, prompt: &[u32], sampling: &SamplingParams, _max_tokens: usize) -> Result<()> {
        self.cache = KvCache::new(&self.model.config);
        self.logits = self
            .model
            .forward(&mut self.cache, prompt)?
            .pop()
            .ok_or_else(|| Error::Request("the prompt is empty".into()))?;
        self.sampling = *sampling;
        self.pending = None;
        self.step = 0;
        Ok(())
    }

    fn next_token(&mut self) -> Result<u32> {
        if let Some(token) = self.pending.take() {
            self.logits = self.model.forward(&mut self.cache, &[token])?.pop().expect("one token in, one row out");
        }
        let token = sample(&self.logits, &self.sampling, self.step);
        self.step += 1;
        self.pending = Some(token);
        Ok(token)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Generator for GpuGenerator {
    fn context_len(&self) -> usize {
        self.model.max_ctx as usize
    }

    fn start(&mut self, prompt: &[u32], sampling: &SamplingParams, max_tokens: usize) -> Result<()> {
        GpuGenerator::start(self, prompt, sampling, max_tokens)
    }

    fn next_token(&mut self) -> Result<u32> {
        pollster::block_on(self.next_token_async())
    }
}
