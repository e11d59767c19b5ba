//! ggml block formats (stub: being written).
