//! Streaming detokenization: text for each new token, emitted only once it is whole.
//!
//! Decoding one token alone is wrong in general: a UTF-8 character can span several byte
//! tokens, and some decoders treat the first token of a sequence differently. So each step
//! decodes a short window (the tokens of the previous emission as context, plus the pending
//! ones) and emits what it adds to the context's text, unless it ends in U+FFFD, the mark
//! of an incomplete byte sequence.

use crate::{Error, Result};

pub struct StreamDecoder {
    /// Context tokens followed by pending tokens.
    window: Vec<u32>,
    /// How many of `window` are context.
    context_len: usize,
    /// Text of the context tokens.
    context_text: String,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder { window: Vec::new(), context_len: 0, context_text: String::new() }
    }

    /// Adds one token; returns the text it completes, if any.
    pub fn push(&mut self, tokenizer: &tokenizers::Tokenizer, id: u32) -> Result<Option<String>> {
        self.window.push(id);
        let text = tokenizer.decode(&self.window, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.context_text.len() || !text.starts_with(&self.context_text)
        {
            return Ok(None);
        }
        let piece = text[self.context_text.len()..].to_string();
        // The tokens just emitted become the next step's context.
        self.window.drain(..self.context_len);
        self.context_len = self.window.len();
        self.context_text = tokenizer.decode(&self.window, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Some(piece))
    }

    /// Whatever is still pending at the end of generation (lossy if it is not valid UTF-8).
    pub fn finish(&mut self, tokenizer: &tokenizers::Tokenizer) -> Result<Option<String>> {
        if self.window.len() == self.context_len {
            return Ok(None);
        }
        let text = tokenizer.decode(&self.window, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let piece = text.get(self.context_text.len()..).unwrap_or("").to_string();
        *self = StreamDecoder::new();
        Ok(Some(piece).filter(|p| !p.is_empty()))
    }
}
