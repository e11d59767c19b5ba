//! One typed wrapper per WGSL kernel in `shaders/`. Each builds [`Op`](super::Op)s with its
//! buffers bound, and each has a test against its CPU twin in `crate::ops`.

pub mod add_scaled;
pub mod attention;
pub mod embed;
pub mod generate_int4;
pub mod matmul;
pub mod moe_combine;
pub mod moe_group;
pub mod moe_route;
pub mod read_bandwidth;
pub mod rms_norm;
pub mod rope;
pub mod sample;
pub mod sample_argmax;
pub mod swiglu;

#[cfg(test)]
pub(crate) mod testing;
