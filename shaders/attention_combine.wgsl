// attention_combine.wgsl — the splits of attention.wgsl (SPLITS > 1: flash-decoding) added up.
//
// For token t < n_tokens and head h, split z left acc_z (the output before normalisation), its
// running max m_z and sum l_z. With M = max_z m_z:
//   out[t, h, :] = sum_z exp(m_z - M) acc_z / sum_z exp(m_z - M) l_z
// Splits that held no keys have m_z = -1e30, l_z = 0 and acc_z = 0, and weigh 0.
//
// Bindings (group 0):
//   0 params   uniform  { n_heads: u32, head_dim: u32, _pad: vec2<u32> }
//   1 step     uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 partials storage read  f32 [n_tokens, SPLITS, n_heads, head_dim + 4], as vec4
//   3 out      storage rw    f32 [n_tokens, n_heads * head_dim], as vec4
// Dispatch: (n_heads, max_tokens, 1) workgroups of WG = head_dim / 4 threads, thread i taking
// column i (a vec4); workgroups with t >= n_tokens return at once.

override WG: u32 = 32u;
override SPLITS: u32 = 2u;

struct Params { n_heads: u32, head_dim: u32, _pad0: u32, _pad1: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    if (t >= step.n_tokens) {
        return;
    }
    let hd4 = params.head_dim / 4u;
    let stride = params.n_heads * (hd4 + 1u); // vec4s per split
    let first = (t * SPLITS * params.n_heads + h) * (hd4 + 1u);
    var big = -1.0e30;
    for (var z = 0u; z < SPLITS; z++) {
        big = max(big, partials[first + z * stride + hd4].x);
    }
    var num = vec4<f32>(0.0);
    var den = 0.0;
    for (var z = 0u; z < SPLITS; z++) {
        let p = first + z * stride;
        let ml = partials[p + hd4];
        let w = exp(ml.x - big);
        num += w * partials[p + lid];
        den += w * ml.y;
    }
    out[(t * params.n_heads + h) * hd4 + lid] = num * (1.0 / den);
}
