//! Hugging Face tensor names (stub)
