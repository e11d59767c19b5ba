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
// The cache holds f32, or f16 (F16: two values packed per u32 by pack2x16float, what rope.wgsl
// writes); it is bound as vec2<u32> words, so 4 values are one word (f16) or two (f32), read
// by key4/value4.
//
// Bindings (group 0); head_dim is a multiple of 4, at most 1024, and Q4 = HEADS * head_dim / 4:
//   0 params   uniform  { n_heads: u32, n_kv_heads: u32, head_dim: u32, scale: f32 }
//   1 step     uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 q        storage read  f32 [n_tokens, n_heads * head_dim] (after RoPE), as vec4
//   3 k_cache  storage read  f32|f16 [max_ctx, n_kv_heads * head_dim], as vec2<u32>
//   4 v_cache  storage read  f32|f16 [max_ctx, n_kv_heads * head_dim], as vec2<u32>
//   5 out      storage rw    f32 [n_tokens, n_heads * head_dim], as vec4 (SPLITS = 1)
//   6 partials storage rw    f32 [n_tokens, SPLITS, n_heads, head_dim + 4], as vec4 (SPLITS > 1;
//                            otherwise any buffer, unused): per split and head, the unnormalised
//                            output, then (max, sum, 0, 0)
// Dispatch: (n_heads / HEADS, max_tokens, SPLITS) workgroups of WG = head_dim / 4 threads;
// workgroups with t >= n_tokens return at once. Split z takes keys z * span .. (z + 1) * span,
// span = ceil((p + 1) / SPLITS), and attention_combine.wgsl adds the splits up. Workgroup (x, t) serves the HEADS query heads
// x * HEADS .. of one key head, so each key and value row is read once for all of them. It
// walks the p + 1 keys in tiles of TILE = KPT * WG keys:
//   1. thread i scores keys start + i + r * WG, r < KPT, against every head (whole dot
//      products), into workgroup memory, and offers its maxima;
//   2. every thread reads the tile's maxima, turns its scores into weights exp(s - m) and keeps
//      its own share of each head's running sum;
//   3. thread i accumulates column i (a vec4) of every head's output over the tile's keys.
// Control flow is uniform in the workgroup (rows past p are clamped and weighted 0): the reads
// of q, the maxima and the weights are the same address in every thread.

override WG: u32 = 32u;
// Query heads per workgroup: a divisor of the GQA group (n_heads / n_kv_heads), at most
// MAX_HEADS, whose workgroup memory (q_tile, weights, reduce) fits WebGPU's guaranteed 16 KiB.
override HEADS: u32 = 1u;
const MAX_HEADS: u32 = 8u;
// The workgroup's query rows in vec4s, HEADS * head_dim / 4 (set by the host, as TILE is).
override Q4: u32 = 256u;
// Keys per thread in a tile of TILE keys.
override KPT: u32 = 4u;
override TILE: u32 = 128u; // = WG * KPT, set by the host (not derived here: see attention.rs)
// Whether the cache holds f16.
override F16: bool = false;
// Workgroups sharing one token's keys (decode on GPUs, flash-decoding; 1 elsewhere).
override SPLITS: u32 = 1u;

// A finite "minus infinity": WGSL implementations may assume no infinities.
const NEG_BIG: f32 = -1.0e30;

struct Params { n_heads: u32, n_kv_heads: u32, head_dim: u32, scale: f32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;

// The workgroup's HEADS query rows, head after head.
var<workgroup> q_tile: array<vec4<f32>, Q4>;
// Per head h, entries h * TILE ..: the tile's scores, then weights.
var<workgroup> weights: array<f32, TILE * HEADS>;
// Per head h, entries h * WG ..: each thread's maximum score, then its share of the sum.
var<workgroup> reduce: array<f32, WG * HEADS>;

// Values 4i .. 4i + 3 of a cache (counted from its start).
fn key4(i: u32) -> vec4<f32> {
    if (F16) {
        let w = k_cache[i];
        return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    return bitcast<vec4<f32>>(vec4<u32>(k_cache[2u * i], k_cache[2u * i + 1u]));
}

fn value4(i: u32) -> vec4<f32> {
    if (F16) {
        let w = v_cache[i];
        return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    return bitcast<vec4<f32>>(vec4<u32>(v_cache[2u * i], v_cache[2u * i + 1u]));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.y;
    if (t >= step.n_tokens) {
        return;
    }
    let first = wg.x * HEADS; // the first query head
    let hd4 = params.head_dim / 4u;
    let kv4 = params.n_kv_heads * hd4;
    let off4 = (first / (params.n_heads / params.n_kv_heads)) * hd4;
    let q_base = (t * params.n_heads + first) * hd4;
    for (var d = lid; d < HEADS * hd4; d += WG) {
        q_tile[d] = q[q_base + d];
    }
    workgroupBarrier();

    let visible = step.position + t + 1u;
    // This workgroup's keys: split wg.z of SPLITS (empty when the context is shorter).
    let span = (visible + SPLITS - 1u) / SPLITS;
    let lo = min(wg.z * span, visible);
    let hi = min(lo + span, visible);
    var m: array<f32, MAX_HEADS>; // running max of each head's scores (the same in every thread)
    var l: array<f32, MAX_HEADS>; // this thread's share of each head's running sum of exp(s - m)
    var acc: array<vec4<f32>, MAX_HEADS>; // column lid of each head's output, scaled like l
    for (var h = 0u; h < HEADS; h++) {
        m[h] = NEG_BIG;
    }
    // Control flow stays uniform (rows past hi are clamped and weighted 0), so that the q and
    // weight reads below are the same address in every thread.
    for (var start = lo; start < hi; start += TILE) {
        // 1. Scores of keys start + lid + r WG against every head: each key row is read once.
        var s_max: array<f32, MAX_HEADS>;
        for (var h = 0u; h < HEADS; h++) {
            s_max[h] = NEG_BIG;
        }
        for (var r = 0u; r < KPT; r++) {
            let i = r * WG + lid;
            let live = start + i < hi;
            let row = min(start + i, hi - 1u) * kv4 + off4;
            var s4: array<vec4<f32>, MAX_HEADS>;
            for (var h = 0u; h < HEADS; h++) {
                s4[h] = vec4<f32>(0.0);
            }
            for (var d = 0u; d < hd4; d++) {
                let kd = key4(row + d);
                for (var h = 0u; h < HEADS; h++) {
                    s4[h] += q_tile[h * hd4 + d] * kd;
                }
            }
            for (var h = 0u; h < HEADS; h++) {
                let sh = select(NEG_BIG, ((s4[h].x + s4[h].y) + (s4[h].z + s4[h].w)) * params.scale, live);
                weights[h * TILE + i] = sh;
                s_max[h] = max(s_max[h], sh);
            }
        }
        // 2. Tile maxima, weights, running sums.
        for (var h = 0u; h < HEADS; h++) {
            reduce[h * WG + lid] = s_max[h];
        }
        workgroupBarrier();
        var alpha: array<f32, MAX_HEADS>;
        for (var h = 0u; h < HEADS; h++) {
            var tile_max = NEG_BIG;
            for (var i = 0u; i < WG; i++) {
                tile_max = max(tile_max, reduce[h * WG + i]);
            }
            let m_new = max(m[h], tile_max);
            alpha[h] = exp(m[h] - m_new); // 0 on the first tile, 1 while the max holds
            var lh = l[h] * alpha[h];
            for (var r = 0u; r < KPT; r++) {
                let i = h * TILE + r * WG + lid;
                let w = select(0.0, exp(weights[i] - m_new), start + r * WG + lid < hi);
                weights[i] = w;
                lh += w;
            }
            l[h] = lh;
            m[h] = m_new;
        }
        workgroupBarrier();
        // 3. Weighted values, thread lid taking column lid: each value row read once, for every head.
        let n = min(TILE, hi - start);
        for (var h = 0u; h < HEADS; h++) {
            acc[h] *= alpha[h];
        }
        for (var i = 0u; i < n; i++) {
            let vi = value4((start + i) * kv4 + off4 + lid);
            for (var h = 0u; h < HEADS; h++) {
                acc[h] += weights[h * TILE + i] * vi;
            }
        }
        workgroupBarrier(); // weights and reduce are rewritten by the next tile
    }

    for (var h = 0u; h < HEADS; h++) {
        reduce[h * WG + lid] = l[h];
    }
    workgroupBarrier();
    for (var h = 0u; h < HEADS; h++) {
        var sum = 0.0;
        for (var i = 0u; i < WG; i++) {
            sum += reduce[h * WG + i];
        }
        if (SPLITS == 1u) {
            out[q_base + h * hd4 + lid] = acc[h] * (1.0 / sum);
        } else {
            // Unnormalised: attention_combine.wgsl weighs the splits by their maxima.
            let p = ((t * SPLITS + wg.z) * params.n_heads + first + h) * (hd4 + 1u);
            partials[p + lid] = acc[h];
            if (lid == 0u) {
                partials[p + hd4] = vec4<f32>(m[h], sum, 0.0, 0.0);
            }
        }
    }
}
