//! Tokenizer embedded in a GGUF file (stub: being written).
