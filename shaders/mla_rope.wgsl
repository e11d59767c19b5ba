// mla_rope.wgsl — multi-head latent attention's per-token step before attention: RMSNorm of the
// latent, RoPE of the key every head shares and of each head's rotary query, and the cache append.
//
// For token t < n_tokens at position p = step.position + t, with kv = kv_in[t, :] = [c | k_pe]
// (kv_lora + rope values, the latent projection's row) and the pair angles
// a_i = f32(p) * inv_freq[i] (host inverse frequencies, plain or YaRN), cos/sin times `factor`:
//   cache[p, :kv_lora]  = c * (1 / sqrt(mean(c^2) + eps)) * norm
//   cache[p, kv_lora:]  = rope(k_pe)
//   q_out[t, h, kv_lora:] = rope(q_rope[t, h, :])   for each head h < n_heads
// where rope rotates pairs (2i, 2i + 1) (interleaved) or (i, i + rope/2) (halves). q_out rows are
// kv_lora + rope wide per head: the per-head W_UK matmul writes their first kv_lora values, so
// each row is the query attention.wgsl scores against the cache rows. Rows past max_ctx are not
// written. CPU twin: ops::{rms_norm, rope} as reference::mla composes them.
//
// Bindings (group 0):
//   0 params    uniform  { n_heads: u32, kv_lora: u32, rope_dim: u32, interleaved: u32 (0|1),
//                          max_ctx: u32, eps: f32, factor: f32, _pad: u32 }
//   1 step      uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 inv_freq  storage read  f32 [rope_dim / 2]
//   3 q_rope    storage read  f32 [n_tokens, n_heads * rope_dim]
//   4 kv_in     storage read  f32 [n_tokens, kv_lora + rope_dim]
//   5 norm      storage read  f32 [kv_lora]
//   6 q_out     storage rw    f32 [n_tokens, n_heads, kv_lora + rope_dim]
//   7 cache     storage rw    f32|f16 [max_ctx, kv_lora + rope_dim] (this layer's), as u32
// Dispatch: (n_heads + 1, max_tokens, 1) workgroups of WG threads (a power of two); workgroup
// (h < n_heads, t) rotates head h's query, (n_heads, t) normalises the latent and appends the
// row (thread i writes columns 2i, 2i + 1: one word of an f16 cache). Workgroups with
// t >= n_tokens return at once. kv_lora and rope_dim are even.

override WG: u32 = 64u;
// Whether the cache holds f16 (pairs packed by pack2x16float) or f32 (as their bits).
override F16: bool = false;

struct Params {
    n_heads: u32,
    kv_lora: u32,
    rope_dim: u32,
    interleaved: u32,
    max_ctx: u32,
    eps: f32,
    factor: f32,
    _pad: u32,
}
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> q_rope: array<f32>;
@group(0) @binding(4) var<storage, read> kv_in: array<f32>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;
@group(0) @binding(6) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> cache: array<u32>;

var<workgroup> partial: array<f32, WG>;

#include "sincos.wgsl"

// Rotated column c of the rotary part starting at `src` of `x_is_q`'s buffer.
fn rotated(src: u32, c: u32, pos: u32, from_q: bool) -> f32 {
    let half = params.rope_dim / 2u;
    var i = c / 2u;
    var partner = c ^ 1u;
    var first = (c & 1u) == 0u;
    if (params.interleaved == 0u) {
        i = c % half;
        partner = select(c - half, c + half, c < half);
        first = c < half;
    }
    let cs = sincos(f32(pos) * inv_freq[i]) * params.factor;
    var x = 0.0;
    var y = 0.0;
    if (from_q) {
        x = q_rope[src + c];
        y = q_rope[src + partner];
    } else {
        x = kv_in[src + c];
        y = kv_in[src + partner];
    }
    if (first) {
        return x * cs.x - y * cs.y;
    }
    return x * cs.x + y * cs.y;
}

// Writes values a, b to cache elements e, e + 1 (e even).
fn store(e: u32, a: f32, b: f32) {
    if (F16) {
        cache[e / 2u] = pack2x16float(vec2<f32>(a, b));
    } else {
        cache[e] = bitcast<u32>(a);
        cache[e + 1u] = bitcast<u32>(b);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.y;
    if (t >= step.n_tokens) {
        return;
    }
    let pos = step.position + t;
    let r = params.kv_lora;
    let d = params.rope_dim;
    if (wg.x < params.n_heads) {
        let src = (t * params.n_heads + wg.x) * d;
        let dst = (t * params.n_heads + wg.x) * (r + d) + r;
        for (var c = lid; c < d; c += WG) {
            q_out[dst + c] = rotated(src, c, pos, true);
        }
        return;
    }
    // The latent's mean square: each thread's share, then a tree sum.
    let row = t * (r + d);
    var s = 0.0;
    for (var c = lid; c < r; c += WG) {
        let v = kv_in[row + c];
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(partial[0] / f32(r) + params.eps);
    if (pos >= params.max_ctx) {
        return;
    }
    let dst = pos * (r + d);
    for (var i = lid; 2u * i < r + d; i += WG) {
        let c = 2u * i;
        if (c < r) {
            store(dst + c, kv_in[row + c] * inv * norm[c], kv_in[row + c + 1u] * inv * norm[c + 1u]);
        } else {
            store(dst + c, rotated(row + r, c - r, pos, false), rotated(row + r, c + 1u - r, pos, false));
        }
    }
}
