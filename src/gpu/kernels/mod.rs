//! One typed wrapper per WGSL kernel in `shaders/`. Each builds [`Op`](super::Op)s with its
//! buffers bound, and each has a test against its CPU twin in `crate::reference::ops`.

pub mod rms_norm;

#[cfg(test)]
pub(crate) mod testing;
