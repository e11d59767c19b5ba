//! GGUF v3 reader (stub: being written).
