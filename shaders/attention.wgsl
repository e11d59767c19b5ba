// attention.wgsl — causal multi-head attention (GQA) of the step's tokens over the KV cache,
// for prefill chunks (T tokens) and decode (T = 1) alike.
//
// For token t < n_tokens (position p = step.position + t) and query head h, with key head
// g = h / (n_heads / n_kv_heads) and rows j = 0..=p of the cache (the chunk's own keys and
// values are already there, appended by rope.wgsl):
//   s_j = (q[t, h, :] . k_cache[j, g, :]) * scale
//   out[t, h, :] = sum_j softmax(s)_j * v_cache[j, g, :]
// The softmax is computed online (one pass over the keys, running max and sum, rescaling the
// partial output when the max grows), so any context length works with fixed workgroup memory.
// Rows past p are never read.
//
// Bindings (group 0); head_dim is a multiple of 4 and at most 256, so rows are read as vec4:
//   0 params   uniform  { n_heads: u32, n_kv_heads: u32, head_dim: u32, scale: f32 }
//   1 step     uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 q        storage read  f32 [n_tokens, n_heads * head_dim] (after RoPE), as vec4
//   3 k_cache  storage read  f32 [max_ctx, n_kv_heads * head_dim], as vec4
//   4 v_cache  storage read  f32 [max_ctx, n_kv_heads * head_dim], as vec4
//   5 out      storage rw    f32 [n_tokens, n_heads * head_dim], as vec4
// Dispatch: (n_heads, max_tokens, 1) workgroups of WG threads (a power of two, >= head_dim / 4);
// workgroups with t >= n_tokens return at once. Workgroup (h, t) walks the p + 1 keys in tiles
// of WG keys:
//   1. thread i scores key start + i (a whole dot product, vec4 loads, 4 in flight);
//   2. the tile's max is reduced in workgroup memory; each thread turns its score into a
//      weight exp(s - m) and keeps its own share of the running sum;
//   3. the threads split as (lane, column): column c < head_dim / 4 of the output (a vec4),
//      lane = i / (head_dim / 4) < WG / (head_dim / 4); each accumulates the weighted value rows
//      of the tile's keys lane, lane + lanes, ... for its column.
// At the end the lanes' partial outputs and the threads' sums are added in workgroup memory.

override WG: u32 = 64u;
const MAX_VEC4: u32 = 64u; // head_dim <= 256

// A finite "minus infinity": WGSL implementations may assume no infinities.
const NEG_BIG: f32 = -1.0e30;

struct Params { n_heads: u32, n_kv_heads: u32, head_dim: u32, scale: f32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

var<workgroup> q_tile: array<vec4<f32>, MAX_VEC4>;
var<workgroup> weights: array<f32, WG>;
var<workgroup> reduce: array<f32, WG>;
var<workgroup> partial: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wg.x;
    let t = wg.y;
    if (t >= step.n_tokens) {
        return;
    }
    let hd4 = params.head_dim / 4u;
    let kv4 = params.n_kv_heads * hd4;
    let off4 = (head / (params.n_heads / params.n_kv_heads)) * hd4;
    let q_base = (t * params.n_heads + head) * hd4;
    for (var d = lid; d < hd4; d += WG) {
        q_tile[d] = q[q_base + d];
    }
    workgroupBarrier();

    let lanes = WG / hd4;
    let col = lid % hd4;
    let lane = lid / hd4;
    let visible = step.position + t + 1u;
    var m = NEG_BIG; // running max of the scores so far (the same in every thread)
    var l = 0.0; // this thread's share of the running sum of exp(s - m)
    var acc = vec4<f32>(0.0); // column col of the output over this lane's keys, scaled like l
    for (var start = 0u; start < visible; start += WG) {
        // 1. Scores.
        let j = start + lid;
        var s = NEG_BIG;
        if (j < visible) {
            let row = j * kv4 + off4;
            var s4 = vec4<f32>(0.0);
            var d = 0u;
            for (; d + 4u <= hd4; d += 4u) {
                let k0 = k_cache[row + d];
                let k1 = k_cache[row + d + 1u];
                let k2 = k_cache[row + d + 2u];
                let k3 = k_cache[row + d + 3u];
                s4 += (q_tile[d] * k0 + q_tile[d + 1u] * k1) + (q_tile[d + 2u] * k2 + q_tile[d + 3u] * k3);
            }
            for (; d < hd4; d++) {
                s4 += q_tile[d] * k_cache[row + d];
            }
            s = ((s4.x + s4.y) + (s4.z + s4.w)) * params.scale;
        }
        // 2. Tile max, weights, running sums.
        reduce[lid] = s;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
            if (lid < stride) {
                reduce[lid] = max(reduce[lid], reduce[lid + stride]);
            }
            workgroupBarrier();
        }
        let m_new = max(m, reduce[0]);
        let alpha = exp(m - m_new); // 0 on the first tile, 1 while the max holds
        var w = 0.0;
        if (j < visible) {
            w = exp(s - m_new);
        }
        weights[lid] = w;
        l = l * alpha + w;
        m = m_new;
        workgroupBarrier();
        // 3. Weighted values.
        if (lane < lanes) {
            let n = min(WG, visible - start);
            var a = acc * alpha;
            var i = lane;
            for (; i + 3u * lanes < n; i += 4u * lanes) {
                let r = (start + i) * kv4 + off4 + col;
                let v0 = v_cache[r];
                let v1 = v_cache[r + lanes * kv4];
                let v2 = v_cache[r + 2u * lanes * kv4];
                let v3 = v_cache[r + 3u * lanes * kv4];
                a += (weights[i] * v0 + weights[i + lanes] * v1) +
                    (weights[i + 2u * lanes] * v2 + weights[i + 3u * lanes] * v3);
            }
            for (; i < n; i += lanes) {
                a += weights[i] * v_cache[(start + i) * kv4 + off4 + col];
            }
            acc = a;
        }
        workgroupBarrier(); // weights and reduce are rewritten by the next tile
    }

    partial[lid] = acc;
    reduce[lid] = l;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            reduce[lid] += reduce[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid < hd4) {
        var o = partial[lid];
        for (var k = 1u; k < lanes; k++) {
            o += partial[lid + k * hd4];
        }
        out[q_base + lid] = o * (1.0 / reduce[0]);
    }
}
