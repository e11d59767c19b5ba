// swiglu.wgsl — SwiGLU gating: out[r, i] = silu(gate[r, i]) * up[r, i], silu(v) = v / (1 + exp(-v))
//
// Rows r < n_tokens * rows_per_token: one row per token for a dense FFN (rows_per_token = 1),
// or one per (token, selected expert) slot for the MoE FFN (rows_per_token = k).
//
// Bindings (group 0):
//   0 params  uniform  { rows_per_token: u32, dim: u32, _pad: vec2<u32> }
//   1 step    uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 gate    storage read  f32 [rows, dim]
//   3 up      storage read  f32 [rows, dim]
//   4 out     storage rw    f32 [rows, dim]
// Dispatch: a 2-D grid of workgroups of WG threads, one element per thread; element
//   i = (wg.y * num_workgroups.x + wg.x) * WG + lid. Built for max_tokens * rows_per_token * dim
//   elements; threads at i >= n_tokens * rows_per_token * dim return at once.

override WG: u32 = 256u;

struct Params { rows_per_token: u32, dim: u32, _pad0: u32, _pad1: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * groups.x + wg.x) * WG + lid;
    if (i >= step.n_tokens * params.rows_per_token * params.dim) {
        return;
    }
    let g = gate[i];
    out[i] = g / (1.0 + exp(-g)) * up[i];
}
