//! safetensors reader (stub)
