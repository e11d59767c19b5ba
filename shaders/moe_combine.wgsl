// moe_combine.wgsl — adds the MoE block's output to the residual stream, in place:
//   x[t, i] += residual_multiplier * ( sum_{s < k} expert_weights[t, s] * expert_out[t * k + s, i]
//                                      + shared_scale[t] * shared_out[t, i] )
// shared_scale[t] = sigmoid(g) = 1 / (1 + exp(-g)), g = shared_gate_logit[t * gate_stride + gate_offset]
//                   (shared_mode 2, gated; the gate logit may be a column of the router's rows)
//                 = 1                                                    (shared_mode 1, ungated)
// and the shared term is absent in shared_mode 0. The sum runs as the reference's does: an
// accumulator from 0, routed experts in slot (top-k) order, then the shared expert, and last
// x + acc * residual_multiplier.
//
// Bindings (group 0):
//   0 params             uniform  { dim: u32, top_k: u32, shared_mode: u32, residual_multiplier: f32,
//                                   gate_offset: u32, gate_stride: u32, _pad: 2 x u32 }
//   1 step               uniform  { n_tokens: u32, position: u32, ... } (see gpu::step); T = n_tokens
//   2 x                  storage rw     f32 [T, dim]       the residual stream, updated in place
//   3 expert_out         storage read   f32 [T * k, dim]   row t * k + s: expert expert_ids[t, s] on token t
//   4 expert_weights     storage read   f32 [T, k]         (moe_route's output)
//   5 shared_out         storage read   f32 [T, dim]       (a 4-byte placeholder in mode 0)
//   6 shared_gate_logit  storage read   f32 [T, gate_stride] (a 4-byte placeholder in modes 0, 1)
// Dispatch: (ceil(dim / WG), max_tokens, 1) workgroups of WG threads; thread (x, y) handles
// element i = x * WG + lid of token t = y; tokens past n_tokens and i >= dim return.

override WG: u32 = 64u;

struct Params {
    dim: u32,
    top_k: u32,
    shared_mode: u32,
    residual_multiplier: f32,
    gate_offset: u32,
    gate_stride: u32,
    _pad0: u32,
    _pad1: u32,
}
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> expert_out: array<f32>;
@group(0) @binding(4) var<storage, read> expert_weights: array<f32>;
@group(0) @binding(5) var<storage, read> shared_out: array<f32>;
@group(0) @binding(6) var<storage, read> shared_gate_logit: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.y;
    let i = wg.x * WG + lid;
    let dim = params.dim;
    if (t >= step.n_tokens || i >= dim) {
        return;
    }
    let k = params.top_k;
    var acc = 0.0;
    for (var s = 0u; s < k; s++) {
        acc += expert_out[(t * k + s) * dim + i] * expert_weights[t * k + s];
    }
    if (params.shared_mode != 0u) {
        var scale = 1.0;
        if (params.shared_mode == 2u) {
            scale = 1.0 / (1.0 + exp(-shared_gate_logit[t * params.gate_stride + params.gate_offset]));
        }
        acc += shared_out[t * dim + i] * scale;
    }
    x[t * dim + i] += acc * params.residual_multiplier;
}
