//! Tokenizer: `tokenizers::Tokenizer`, chat templates, streaming detokenizer.

pub mod gguf;
