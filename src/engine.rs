//! The generate loop: prefill the prompt, sample, decode token by token, stop on an end
//! token, a stop string, the token budget or the context's end, and stream text as it forms.

use crate::reference::{KvCache, ReferenceModel};
use crate::sampler::{sample, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};
use std::ops::ControlFlow;
use std::sync::Arc;

/// Runs a model forward over a growing sequence. The CPU reference implements it; the GPU
/// engine will too.
pub trait Forward {
    /// Processes `tokens` after the current position; returns the last position's logits.
    fn forward_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Positions processed so far.
    fn position(&self) -> usize;
    /// The model's context length.
    fn context_len(&self) -> usize;
    /// Starts a new sequence.
    fn reset(&mut self);
}

/// The CPU reference as a [`Forward`].
pub struct CpuForward {
    pub model: Arc<ReferenceModel>,
    cache: KvCache,
}

impl CpuForward {
    /// A sequence over `model`; sequences can share one model.
    pub fn new(model: impl Into<Arc<ReferenceModel>>) -> Self {
        let model = model.into();
        let cache = KvCache::new(&model.config);
        CpuForward { model, cache }
    }
}

impl Forward for CpuForward {
    fn forward_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = self.model.forward(&mut self.cache, tokens)?;
        logits.pop().ok_or_else(|| Error::Request("no tokens to process".into()))
    }
    fn position(&self) -> usize {
        self.cache.len()
    }
    fn context_len(&self) -> usize {
        self.model.config.max_position_embeddings
    }
    fn reset(&mut self) {
        self.cache = KvCache::new(&self.model.config);
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; the string itself is not returned.
    pub stop: Vec<String>,
    /// Token ids that end generation (not returned as text).
    pub stop_token_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 128, sampling: SamplingParams::default(), stop: vec![], stop_token_ids: vec![] }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    /// Generated token ids (the end token, if any, excluded).
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
}

/// Generates from `prompt` (token ids), calling `on_text` with each piece of text as it forms.
pub fn generate(
    model: &mut dyn Forward,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Completion> {
    if prompt.is_empty() {
        return Err(Error::Request("the prompt is empty".into()));
    }
    if prompt.len() >= model.context_len() {
        return Err(Error::Request(format!(
            "the prompt has {} tokens; the context holds {}",
            prompt.len(),
            model.context_len()
        )));
    }
    model.reset();
    let mut stream = StreamDecoder::new();
    let mut text = String::new();
    let mut emitted = 0; // bytes of `text` handed to on_text
    let mut tokens = Vec::new();
    let mut logits = model.forward_last(prompt)?;
    let mut finish = FinishReason::Length;

    while tokens.len() < options.max_tokens {
        let next = sample(&logits, &options.sampling, tokens.len() as u64);
        if options.stop_token_ids.contains(&next) {
            finish = FinishReason::Stop;
            break;
        }
        tokens.push(next);
        if let Some(piece) = stream.push(&tokenizer.inner, next)? {
            text.push_str(&piece);
            if let Some(at) = options.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(at);
                finish = FinishReason::Stop;
                break;
            }
            // Hold back a tail that could still grow into a stop string.
            let safe = text.len() - held_back(&text, &options.stop);
            if safe > emitted {
                if on_text(&text[emitted..safe]).is_break() {
                    emitted = safe;
                    finish = FinishReason::Cancelled;
                    break;
                }
                emitted = safe;
            }
        }
        if tokens.len() >= options.max_tokens || model.position() + 1 >= model.context_len() {
            break;
        }
        logits = model.forward_last(&[next])?;
    }
    if finish != FinishReason::Cancelled {
        if finish == FinishReason::Length {
            if let Some(rest) = stream.finish(&tokenizer.inner)? {
                text.push_str(&rest);
            }
        }
        if text.len() > emitted {
            let _ = on_text(&text[emitted..]);
        }
    }
    Ok(Completion { text, tokens, prompt_tokens: prompt.len(), finish_reason: finish })
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).rev().filter(move |&n| s.is_char_boundary(n) && text.ends_with(&s[..n])).take(1))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn holds_back_partial_stop_strings() {
        let stops = vec!["</end>".to_string(), "\n\n".to_string()];
        assert_eq!(held_back("hello </e", &stops), 3);
        assert_eq!(held_back("hello\n", &stops), 1);
        assert_eq!(held_back("hello", &stops), 0);
    }
}
