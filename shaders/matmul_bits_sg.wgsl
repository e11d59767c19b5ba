// matmul_bits_sg.wgsl — the computation of matmul_bits.wgsl (same formula, bindings, dispatch
// grid and uses), shaped as matmul_int4_sg.wgsl for devices with subgroups of 8 or more: each
// invocation computes RPT rows over all columns, lanes share a unit's x by subgroupBroadcast.
// Needs Features::SUBGROUP. CPU twin: PackedMatrix::matvec / matmul.
//
// Per 16 columns of one (d, m) (bits_format.wgsl: for codebooks m = 0, v = the level), the sum
// is d * sum(v * x) + m * sum(x): the codes are converted, never scaled, per weight.
//
// Bindings (group 0): as matmul_bits.wgsl (qs u32 [rows, 4 * row_vec4s], scales u32 [rows,
// scale_stride]). Dispatch: as matmul_int4_sg.wgsl (matmul_subgroup.wgsl, included).

override RPT: u32 = 1u;       // rows per invocation, at most 4
override WG: u32 = 64u;       // invocations per workgroup
override ROWS: u32 = 64u;     // = WG * RPT
override TT: u32 = 1u;        // tokens per tile, at most 8
override SKIP: bool = false; // skip a tile's tokens past nt (grouped tiles, often part-filled)
override PAIR: bool = false; // SwiGLU pairs: out = silu(gate row) * up row (RPT even)

@group(0) @binding(6) var<storage, read> qs: array<u32>;
@group(0) @binding(7) var<storage, read> scales: array<u32>;
@group(0) @binding(8) var<storage, read> group_rows: array<u32>;

var<private> qb: vec4<u32>;
var<private> sb: vec4<u32>;
var<private> xr: array<u32, 8>;
var<private> tile_n: u32;     // the tile's tokens (nt), for SKIP
var<private> acc: array<vec4<f32>, 8>;

// The values v of four codes: the code itself (its offset is folded into m) or its level.
fn vals(q: vec4<u32>) -> vec4<f32> {
    if (CODE == 0u) {
        return vec4<f32>(q);
    }
    return levels4(q);
}

// sum(v * x) over part c (columns 8c .. 8c + 8) of the unit whose words start at `base`.
fn part(base: u32, c: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let q = bits_codes(base, c);
    return dot(vals(q[0]), xa) + dot(vals(q[1]), xb);
}

fn unit(u: u32, l8: u32, half: bool) {
    // (d, m) of each row: lo for columns 0..16 of the unit, hi for 16..32.
    var dlo = vec4<f32>(0.0);
    var mlo = vec4<f32>(0.0);
    var dhi = vec4<f32>(0.0);
    var mhi = vec4<f32>(0.0);
    for (var i = 0u; i < RPT; i++) {
        let a = bits_scale(sb[i], u, 0u);
        var b = a;
        if (SCALES == 2u && SUB == 16u) {
            b = bits_scale(sb[i], u, 1u);
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
        let xl = x[xr[j] + 8u * u + l8];
        let x0 = subgroupBroadcast(xl, 0u);
        let x1 = subgroupBroadcast(xl, 1u);
        let x2 = subgroupBroadcast(xl, 2u);
        let x3 = subgroupBroadcast(xl, 3u);
        let x4 = subgroupBroadcast(xl, 4u);
        let x5 = subgroupBroadcast(xl, 5u);
        let x6 = subgroupBroadcast(xl, 6u);
        let x7 = subgroupBroadcast(xl, 7u);
        let one = vec4<f32>(1.0);
        let sx = vec2<f32>(dot(x0 + x1 + x2 + x3, one), dot(x4 + x5 + x6 + x7, one));
        var lo = vec4<f32>(0.0);
        var hi = vec4<f32>(0.0);
        for (var i = 0u; i < RPT; i++) {
            let base = qb[i] + u * BITS;
            lo[i] = part(base, 0u, x0, x1) + part(base, 1u, x2, x3);
            hi[i] = part(base, 2u, x4, x5) + part(base, 3u, x6, x7);
        }
        acc[j] += dlo * lo + mlo * sx.x + dhi * hi + mhi * sx.y;
    }
}

// Points row i of the invocation at row `row` of the weights.
fn set_row(i: u32, row: u32) {
    qb[i] = row * 4u * params.row_vec4s;
    sb[i] = row * params.scale_stride;
}

#include "matmul_subgroup.wgsl"
#include "bits_format.wgsl"
