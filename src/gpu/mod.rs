//! The GPU side: device and limits, buffers, kernels (one typed wrapper per WGSL file), and
//! operations recorded once and replayed every step.
//!
//! An [`Op`] is one dispatch with everything bound: built once when a model is loaded, encoded
//! into a compute pass on every step. Values that change per step (position, token count)
//! live in GPU buffers that kernels read, so no op and no buffer is created in the token loop.

pub mod device;
pub mod feed;
pub mod generated;
pub mod generator;
pub mod kernels;
pub mod matrix;
#[cfg(not(target_arch = "wasm32"))]
pub mod measure;
pub mod model;
pub mod plan;
pub mod shaders;
pub mod step;

pub use device::{Backend, Gpu};

use std::sync::Arc;

/// One dispatch of a compute pipeline with its bindings.
pub struct Op {
    pub label: &'static str,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// Weight bytes the dispatch reads when the step holds as many tokens as the op was built for
    /// (matmuls: once per token tile; for routed experts, the expected share under uniform
    /// routing of the experts the tokens select, or of their tiles when grouped, that this op's
    /// chunk holds); 0 for other kernels.
    pub weight_bytes: u64,
}

impl Op {
    /// Records the dispatch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Records `ops` in order into one compute pass of a new command buffer and submits it.
/// (Within a pass, wgpu orders storage writes before later reads of the same buffer.)
pub fn submit(gpu: &Gpu, ops: &[&Op]) -> wgpu::SubmissionIndex {
    submit_then(gpu, ops, |_| {})
}

/// [`submit`], with `after` recording more commands (copies) after the pass, in the same
/// command buffer.
pub fn submit_then(gpu: &Gpu, ops: &[&Op], after: impl FnOnce(&mut wgpu::CommandEncoder)) -> wgpu::SubmissionIndex {
    let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("flint ops") });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        for op in ops {
            op.encode(&mut pass);
        }
    }
    after(&mut encoder);
    gpu.queue.submit([encoder.finish()])
}
