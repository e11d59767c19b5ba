// add_scaled.wgsl — residual update: x[i] += y[i] * scale, for i < n_tokens * dim
//
// Adds a sub-layer's output to the residual stream, scaled by Granite's residual multiplier
// (scale = 1 for the other families); also serves any scaled accumulation of whole rows.
//
// Bindings (group 0):
//   0 params  uniform  { dim: u32, scale: f32, _pad: vec2<u32> }
//   1 step    uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 x       storage rw    f32 [n_tokens, dim], updated in place
//   3 y       storage read  f32 [n_tokens, dim]
// Dispatch: a 2-D grid of workgroups of WG threads, one element per thread; element
//   i = (wg.y * num_workgroups.x + wg.x) * WG + lid (2-D so that more than 65535 * WG elements
//   fit). Built for max_tokens * dim elements; threads at i >= n_tokens * dim return at once.

override WG: u32 = 256u;

struct Params { dim: u32, scale: f32, _pad0: u32, _pad1: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * groups.x + wg.x) * WG + lid;
    if (i >= step.n_tokens * params.dim) {
        return;
    }
    x[i] += y[i] * params.scale;
}
