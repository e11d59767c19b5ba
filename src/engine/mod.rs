//! The generate loop: prefill the prompt, sample, decode token by token, stop on an end
//! token, a stop string, the token budget or the context's end, and stream text as it forms.

//!
//! The engine is the layer that puts the parts together for every surface (CLI, server, browser):
//! [`files`] opens a checkpoint, [`build`] makes the model and its generator (chunking, context
//! defaults), [`streamed`] loads a model part by part, [`generator`] is the interface both engines
//! implement, and this module is the generate loop itself.

pub mod build;
pub mod files;
pub mod generator;
pub mod streamed;

pub use files::ModelFiles;
pub use generator::{CpuGenerator, Generator};

use crate::sampler::SamplingParams;
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};
use std::ops::ControlFlow;

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
    model: &mut dyn Generator,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Completion> {
    let limit = token_limit(model.context_len(), prompt, options)?;
    model.start(prompt, &options.sampling, limit)?;
    let mut text = TextStream::new(tokenizer, options, limit);
    while !text.is_done() {
        if let Some(piece) = text.push(model.next_token()?)? {
            if on_text(&piece).is_break() {
                text.cancel();
            }
        }
    }
    let (tail, completion) = text.finish(prompt.len())?;
    if let Some(tail) = tail {
        let _ = on_text(&tail);
    }
    Ok(completion)
}

/// How many tokens a request may generate: `max_tokens`, bounded by the room the prompt leaves
/// in the context (each generated token but the last is fed back). Errors for a prompt that is
/// empty or does not fit.
pub fn token_limit(context: usize, prompt: &[u32], options: &GenerateOptions) -> Result<usize> {
    if prompt.is_empty() {
        return Err(Error::Request("the prompt is empty".into()));
    }
    if prompt.len() >= context {
        return Err(Error::Request(format!("the prompt has {} tokens; the context holds {context}", prompt.len())));
    }
    Ok(options.max_tokens.min(context - prompt.len()))
}

/// Turns sampled tokens into text as they arrive: stops at an end token, a stop string or the
/// token limit, and holds back text that could still grow into a stop string. Shared by the
/// blocking [`generate`] and the browser's async loop.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    options: &'a GenerateOptions,
    limit: usize,
    decoder: StreamDecoder,
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    tokens: Vec<u32>,
    finish: Option<FinishReason>,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, options: &'a GenerateOptions, limit: usize) -> Self {
        TextStream {
            tokenizer,
            options,
            limit,
            decoder: StreamDecoder::new(),
            text: String::new(),
            emitted: 0,
            tokens: Vec::new(),
            finish: None,
        }
    }

    /// Whether generation is over (stopped, cancelled, or the limit reached).
    pub fn is_done(&self) -> bool {
        self.finish.is_some() || self.tokens.len() >= self.limit
    }

    /// Generated tokens so far (end token excluded).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Takes the next sampled token; returns the text that became safe to show, if any.
    pub fn push(&mut self, token: u32) -> Result<Option<String>> {
        if self.is_done() {
            return Ok(None);
        }
        if self.options.stop_token_ids.contains(&token) {
            self.finish = Some(FinishReason::Stop);
            return Ok(None);
        }
        self.tokens.push(token);
        let Some(piece) = self.decoder.push(&self.tokenizer.inner, token)? else { return Ok(None) };
        self.text.push_str(&piece);
        if let Some(at) = self.options.stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(at);
            self.finish = Some(FinishReason::Stop);
            return Ok(None);
        }
        // Hold back a tail that could still grow into a stop string.
        let safe = self.text.len() - held_back(&self.text, &self.options.stop);
        if safe <= self.emitted {
            return Ok(None);
        }
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        Ok(Some(out))
    }

    /// The caller stops here: nothing more is emitted.
    pub fn cancel(&mut self) {
        self.finish = Some(FinishReason::Cancelled);
    }

    /// Ends the stream: the text not yet handed out (unless cancelled), and the completion.
    pub fn finish(mut self, prompt_tokens: usize) -> Result<(Option<String>, Completion)> {
        let finish = self.finish.unwrap_or(FinishReason::Length);
        let mut tail = None;
        if finish != FinishReason::Cancelled {
            if finish == FinishReason::Length {
                if let Some(rest) = self.decoder.finish(&self.tokenizer.inner)? {
                    self.text.push_str(&rest);
                }
            }
            if self.text.len() > self.emitted {
                tail = Some(self.text[self.emitted..].to_string());
            }
        }
        let completion = Completion { text: self.text, tokens: self.tokens, prompt_tokens, finish_reason: finish };
        Ok((tail, completion))
    }
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
