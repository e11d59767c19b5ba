// rope.wgsl — rotary position embedding of q and k, and the KV-cache append.
//
// For token t < n_tokens at position p = step.position + t, and each pair i < head_dim / 2 of
// each head, with angle a = f32(p) * inv_freq[i]:
//   (x0, x1) = (head[i0], head[i1]);  head[i0] = x0 cos a - x1 sin a;  head[i1] = x1 cos a + x0 sin a
// pairs (i0, i1) = (i, i + head_dim/2) (halves, HF rotate_half) or (2i, 2i + 1) (interleaved).
// The rotated q goes to q_out; row p of the layer's caches gets this token's rotated k and its v
// (rows past max_ctx are not written). q, k and v are read from columns of wider rows (the
// fused q|k|v projection, or their own buffers: offset 0, stride their width).
//
// inv_freq comes from the host (reference::ops::rope_inv_freq: 1 / theta^(2i/d) in f32, as
// reference::ops::rope_angles computes it), so a is bit for bit the reference's angle (one
// correctly rounded multiply). cos and sin are computed here, not with the builtins: WGSL
// only promises an absolute error of 2^-11 on [-pi, pi] for those and nothing beyond, while
// angles reach thousands of radians. sincos() reduces a modulo pi/2 with pi/2 split in four
// parts (Cody-Waite; exact products for quadrant counts below 2^16, i.e. angles below ~1e5)
// and evaluates Taylor polynomials on [-pi/4, pi/4] (truncation below 3e-9): a few ulps.
// (Measured over positions up to 32k, head_dim 128: this gives rotated values within 1.5e-7 of
// the CPU twin on lavapipe and on an H100; the builtin cos/sin on the H100 were off by 5e-4 at
// position 4000 and 5e-3 at 32000, and computing inv_freq with pow() on the GPU added 3e-4 at
// position 4000 even on lavapipe.)
//
// Bindings (group 0):
//   0 params    uniform  { n_heads: u32, n_kv_heads: u32, head_dim: u32, interleaved: u32 (0|1),
//                          max_ctx: u32, q_offset: u32, q_stride: u32, k_offset: u32,
//                          k_stride: u32, v_offset: u32, v_stride: u32, _pad: u32 }
//   1 step      uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 inv_freq  storage read  f32 [head_dim / 2]
//   3 q_in      storage read  f32 [n_tokens, q_stride]: token t's q at columns q_offset ..
//   4 k_in      storage read  f32 [n_tokens, k_stride]: its k at columns k_offset ..
//   5 v_in      storage read  f32 [n_tokens, v_stride]: its v at columns v_offset ..
//   6 q_out     storage rw    f32 [n_tokens, n_heads * head_dim]
//   7 k_cache   storage rw    f32|f16 [max_ctx, n_kv_heads * head_dim] (this layer's), as u32
//   8 v_cache   storage rw    f32|f16 [max_ctx, n_kv_heads * head_dim] (this layer's), as u32
// Dispatch: (n_heads + n_kv_heads, max_tokens, 1) workgroups of WG threads. Workgroup (h, t)
// rotates query head h (h < n_heads) or key head h - n_heads, two adjacent columns per thread
// (looping when head_dim / 2 > WG), each computed from its pair; key heads also write their
// k and v slices to the caches (F16: rounded to nearest f16, two per u32 word).
// Workgroups with t >= n_tokens return at once.

override WG: u32 = 64u;
// Whether the caches hold f16 (pairs packed by pack2x16float) or f32 (as their bits).
override F16: bool = false;

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    interleaved: u32,
    max_ctx: u32,
    q_offset: u32,
    q_stride: u32,
    k_offset: u32,
    k_stride: u32,
    v_offset: u32,
    v_stride: u32,
    _pad: u32,
}
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> q_in: array<f32>;
@group(0) @binding(4) var<storage, read> k_in: array<f32>;
@group(0) @binding(5) var<storage, read> v_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(8) var<storage, read_write> v_cache: array<u32>;

#include "sincos.wgsl"

// Column c of a head rotated: x[c] its value, x[partner] the other of its pair, cs the pair's
// (cos, sin); first: c is the pair's first column.
fn rotated(xc: f32, xp: f32, cs: vec2<f32>, first: bool) -> f32 {
    if (first) {
        return xc * cs.x - xp * cs.y;
    }
    return xc * cs.x + xp * cs.y;
}

// Column c's pair: (inv_freq index, partner column, whether c comes first).
fn pair_of(c: u32, half: u32) -> vec3<u32> {
    if (params.interleaved != 0u) {
        return vec3<u32>(c / 2u, c ^ 1u, u32((c & 1u) == 0u));
    }
    if (c < half) {
        return vec3<u32>(c, c + half, 1u);
    }
    return vec3<u32>(c - half, c - half, 0u);
}

// Writes values a, b to elements e, e + 1 (e even) of a cache: one word of an f16 pair, or
// two words of f32 bits.
fn store_k(e: u32, a: f32, b: f32) {
    if (F16) {
        k_cache[e / 2u] = pack2x16float(vec2<f32>(a, b));
    } else {
        k_cache[e] = bitcast<u32>(a);
        k_cache[e + 1u] = bitcast<u32>(b);
    }
}

fn store_v(e: u32, a: f32, b: f32) {
    if (F16) {
        v_cache[e / 2u] = pack2x16float(vec2<f32>(a, b));
    } else {
        v_cache[e] = bitcast<u32>(a);
        v_cache[e + 1u] = bitcast<u32>(b);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.y;
    if (t >= step.n_tokens) {
        return;
    }
    let pos = step.position + t;
    let hd = params.head_dim;
    let half = hd / 2u;
    let is_query = wg.x < params.n_heads;
    let kv_dim = params.n_kv_heads * hd;
    let kv_head = (wg.x - params.n_heads) * hd; // key heads: the head's first column
    var src: u32;
    if (is_query) {
        src = t * params.q_stride + params.q_offset + wg.x * hd;
    } else {
        src = t * params.k_stride + params.k_offset + kv_head;
    }
    let q_dst = (t * params.n_heads + wg.x) * hd;
    let k_dst = pos * kv_dim + kv_head;
    let v_src = t * params.v_stride + params.v_offset + kv_head;
    // Thread i writes the adjacent columns 2i and 2i + 1 (one packed word of an f16 cache).
    for (var i = lid; i < half; i += WG) {
        var out: array<f32, 2>;
        for (var e = 0u; e < 2u; e++) {
            let c = 2u * i + e;
            let pr = pair_of(c, half);
            let cs = sincos(f32(pos) * inv_freq[pr.x]);
            if (is_query) {
                out[e] = rotated(q_in[src + c], q_in[src + pr.y], cs, pr.z != 0u);
            } else {
                out[e] = rotated(k_in[src + c], k_in[src + pr.y], cs, pr.z != 0u);
            }
        }
        if (is_query) {
            q_out[q_dst + 2u * i] = out[0];
            q_out[q_dst + 2u * i + 1u] = out[1];
        } else if (pos < params.max_ctx) {
            store_k(k_dst + 2u * i, out[0], out[1]);
            store_v(k_dst + 2u * i, v_in[v_src + 2u * i], v_in[v_src + 2u * i + 1u]);
        }
    }
}
