// matmul_int4_sg.wgsl — the computation of matmul_int4.wgsl (same formula, bindings, dispatch
// grid and uses: dense decode/prefill, routed experts per slot, and grouped experts), shaped for CPU-like devices with
// subgroups of at least 8 invocations (lavapipe: 8 SIMD lanes): needs Features::SUBGROUP.
//
// out[t, r] = sum_c W[r, c] * x[t, c] (+ bias[r]), W[r, c] = d * q + m per group of GROUP columns,
// computed per group as d * sum(q * x) + m * sum(x).
//
// Bindings (group 0): as matmul_int4.wgsl:
//   0 params uniform Params; 1 step uniform; 2 x vec4<f32> [T_or_slots, cols/4]; 3 expert_ids u32 [T, k]
//   (grouped: moe_group's tiles); 4 bias f32 [rows]; 5 out f32 (rw); 6 qs vec4<u32> [rows, row_vec4s];
//   7 scales u32 [rows, scale_stride]; 8 group_rows u32 [T*k] (grouped only).
// Dispatch: (blocks_x, items, ceil(row blocks / blocks_x)) workgroups of WG invocations; a row
//   block is ROWS = WG * RPT rows, invocation i computing rows i*RPT .. i*RPT+RPT, all columns.
//   Per 32-column unit, each lane loads ONE vec4 of the unit's x (lane l: columns 4(l%8)..+4) and
//   takes the other seven from its neighbours with subgroupBroadcast: on lavapipe every per-lane
//   load is a scalar gather, so this cuts the x loads per weight from 1 (or 1/RPT) to 1/(8 RPT).
//   Every loop runs in uniform control flow (rows past the end compute a copy of the last row and
//   are not written), as subgroup operations require, and WG must be a multiple of the subgroup
//   size (every subgroup full: lanes 0..7 of each subgroup hold the unit's x).
// Epilogues (add, PAIR) as in matmul_int4.wgsl.
// Grouped pipelines set SKIP (see matmul_int4.wgsl): a tile's tokens past its count are skipped;
//   the branch stays workgroup-uniform, so the broadcasts stay in uniform control flow.

override RPT: u32 = 1u;       // rows per invocation, at most 4
override WG: u32 = 64u;       // invocations per workgroup
override ROWS: u32 = 64u;     // = WG * RPT
override TT: u32 = 1u;        // tokens per tile, at most 8
override SKIP: bool = false; // skip a tile's tokens past nt (grouped tiles, often part-filled)
override PAIR: bool = false; // SwiGLU pairs: out = silu(gate row) * up row (RPT even)
override GROUP: u32 = 32u;    // columns per (d, m) group: 16, 32, 64 or 128
override WIDE: u32 = 0u;      // 1: f32 (d, m) pairs; 0: packed f16 pairs

@group(0) @binding(6) var<storage, read> qs: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> scales: array<u32>;
@group(0) @binding(8) var<storage, read> group_rows: array<u32>;

// Nibble k of a half-word is taken as q * 16^k (an and, no shift), and the x it multiplies is
// scaled by 16^-k beforehand: the product is q * x exactly (powers of two).
const MASK = vec4<u32>(0xfu, 0xf0u, 0xf00u, 0xf000u);
const X_SCALE = vec4<f32>(1.0, 0.0625, 0.00390625, 0.000244140625);
const X_UNSCALE = vec4<f32>(1.0, 16.0, 256.0, 4096.0);

// (d, m) of group g of the row whose scales start at `base`.
fn scale(base: u32, g: u32) -> vec2<f32> {
    if (WIDE != 0u) {
        return vec2<f32>(bitcast<f32>(scales[base + 2u * g]), bitcast<f32>(scales[base + 2u * g + 1u]));
    }
    return unpack2x16float(scales[base + g]);
}

// The 4 nibbles of the low half-word of w, nibble k as q * 16^k (below 2^16: exact in f32; an i32
// conversion is one instruction where an unsigned one is several).
fn nib(w: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(vec4<u32>(w) & MASK));
}

// The invocation's rows (component i < RPT): where they start in qs and scales; its tokens' x
// rows (vec4 index); its sums acc[token][row].
var<private> qb: vec4<u32>;
var<private> sb: vec4<u32>;
var<private> xr: array<u32, 8>;
var<private> tile_n: u32;     // the tile's tokens (nt), for SKIP
var<private> acc: array<vec4<f32>, 8>;

// sum(q * x) over the unit's first 16 columns (.x) and last 16 (.y) for the words q of one row.
fn qx(q: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>,
      x6: vec4<f32>, x7: vec4<f32>, half: bool) -> vec2<f32> {
    let lo = dot(nib(q.x), x0) + dot(nib(q.x >> 16u), x1) + dot(nib(q.y), x2) + dot(nib(q.y >> 16u), x3);
    if (half) {
        return vec2<f32>(lo, 0.0);
    }
    return vec2<f32>(lo, dot(nib(q.z), x4) + dot(nib(q.z >> 16u), x5) + dot(nib(q.w), x6) + dot(nib(q.w >> 16u), x7));
}

// Adds unit u (columns 32u .. 32u+32, or the first 16 when `half`) of the invocation's rows.
fn unit(u: u32, l8: u32, half: bool) {
    // Words and (d, m) of each row: lo for columns 0..16 of the unit, hi for 16..32.
    var q: array<vec4<u32>, 4>;
    var dlo = vec4<f32>(0.0);
    var mlo = vec4<f32>(0.0);
    var dhi = vec4<f32>(0.0);
    var mhi = vec4<f32>(0.0);
    for (var i = 0u; i < RPT; i++) {
        q[i] = qs[qb[i] + u];
        let a = scale(sb[i], (32u * u) / GROUP);
        var b = a;
        if (GROUP == 16u) {
            b = scale(sb[i], 2u * u + 1u);
        }
        dlo[i] = a.x;
        mlo[i] = a.y;
        dhi[i] = b.x;
        mhi[i] = b.y;
    }
    for (var j = 0u; j < TT; j++) {
        if (SKIP && j >= tile_n) {
            break;
        }
        let xl = x[xr[j] + 8u * u + l8] * X_SCALE;
        let x0 = subgroupBroadcast(xl, 0u);
        let x1 = subgroupBroadcast(xl, 1u);
        let x2 = subgroupBroadcast(xl, 2u);
        let x3 = subgroupBroadcast(xl, 3u);
        let x4 = subgroupBroadcast(xl, 4u);
        let x5 = subgroupBroadcast(xl, 5u);
        let x6 = subgroupBroadcast(xl, 6u);
        let x7 = subgroupBroadcast(xl, 7u);
        let sx = vec2<f32>(dot(x0 + x1 + x2 + x3, X_UNSCALE), dot(x4 + x5 + x6 + x7, X_UNSCALE));
        var lo = vec4<f32>(0.0);
        var hi = vec4<f32>(0.0);
        for (var i = 0u; i < RPT; i++) {
            let s = qx(q[i], x0, x1, x2, x3, x4, x5, x6, x7, half);
            lo[i] = s.x;
            hi[i] = s.y;
        }
        var a = acc[j] + dlo * lo + mlo * sx.x;
        if (!half) {
            a += dhi * hi + mhi * sx.y;
        }
        acc[j] = a;
    }
}

// Points row i of the invocation at row `row` of the weights.
fn set_row(i: u32, row: u32) {
    qb[i] = row * params.row_vec4s;
    sb[i] = row * params.scale_stride;
}

#include "matmul_subgroup.wgsl"
