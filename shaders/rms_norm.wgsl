// rms_norm.wgsl — RMSNorm of rows: out[r, i] = x[r, i] / sqrt(mean_i(x[r, :]^2) + eps) * weight[i]
//
// Serves the layer norms (one row per token, dim = hidden), Qwen3's per-head q/k norms
// (rows_per_token = heads, dim = head_dim) and OLMoE's whole-projection q/k norms.
//
// A token's rows may sit inside a wider row of x (q or k in the fused q|k|v projection): row j of
// token t starts at t * x_stride + x_offset + j * dim.
//
// Bindings (group 0):
//   0 params  uniform  { rows_per_token: u32, dim: u32, eps: f32, last: u32, x_offset: u32,
//                        x_stride: u32, _pad: 2 x u32 }
//   1 step    uniform  { n_tokens: u32, position: u32, ... } (see gpu::step); rows = n_tokens * rows_per_token
//   2 x       storage read   f32 [n_tokens, x_stride]
//   3 weight  storage read   f32 [dim]
//   4 out     storage rw     f32 [rows, dim]
// Dispatch: (max_rows, 1, 1) workgroups of WG threads, one workgroup per row; rows past
// n_tokens * rows_per_token return at once. Sums of squares are reduced in workgroup memory.
// last != 0: only the step's last token is normalised: dispatch (rows_per_token, 1, 1); input
// rows (n_tokens - 1) * rows_per_token + r go to output rows r (the logits of a prompt are read
// only at its last position, so the head runs on that row alone).

override WG: u32 = 64u;

struct Params { rows_per_token: u32, dim: u32, eps: f32, last: u32, x_offset: u32, x_stride: u32, _pad0: u32, _pad1: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var row = wg.x;
    let out_row = wg.x;
    if (params.last != 0u) {
        row = (step.n_tokens - 1u) * params.rows_per_token + wg.x;
    }
    if (row >= step.n_tokens * params.rows_per_token) {
        return;
    }
    let base = (row / params.rows_per_token) * params.x_stride + params.x_offset + (row % params.rows_per_token) * params.dim;
    let out_base = out_row * params.dim;
    var sum = 0.0;
    for (var i = lid; i < params.dim; i += WG) {
        let v = x[base + i];
        sum += v * v;
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(partial[0] / f32(params.dim) + params.eps);
    for (var i = lid; i < params.dim; i += WG) {
        out[out_base + i] = x[base + i] * inv * weight[i];
    }
}
