// matmul_bits.wgsl — y = W x with W in flint's Bits format (quant::packed::Format::Bits, read by
// bits_format.wgsl: BITS-bit codes in bit planes, 32 elements per unit of BITS words, with pair,
// E8M0 or super-block scales): ggml's Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS and
// MXFP4, kept at about their file size. CPU twin: PackedMatrix::matvec / matmul.
//
// The uses (dense, routed expert per slot, grouped experts), the epilogues (bias, SwiGLU pairs,
// store or residual add), the chunking and the dispatch are matmul_int4.wgsl's (see its header,
// and matmul_common.wgsl and matmul_rows.wgsl, included); only the weights differ.
//
// Bindings (group 0): 0-5 as matmul_int4.wgsl;
//   6 qs          storage read  u32 [rows, 4 * row_vec4s]: the row's units (cols / 32 * BITS
//                               words), padded with zero words to a multiple of 4
//   7 scales      storage read  u32 [rows, scale_stride] (bits_format.wgsl)
//   8 group_rows  storage read  u32 [T*k] (grouped mode only)
// Dispatch: as matmul_int4.wgsl. Thread `lane` of a row's TPR threads reads units lane,
// lane + TPR, ...; each unit is decoded once per token tile, in four parts of 8 columns.

override ROWS: u32 = 8u;      // rows per workgroup = (WG / TPR) * RPT
override TPR: u32 = 8u;       // threads per row
override RPT: u32 = 1u;       // rows per thread, at most 4
override WG: u32 = 64u;       // threads per workgroup
override TT: u32 = 1u;        // tokens per tile, at most 8
override SKIP: bool = false; // skip a tile's tokens past nt (grouped tiles, often part-filled)
override PAIR: bool = false; // SwiGLU pairs: out = silu(gate row) * up row (RPT even)
override PARTIAL: u32 = 64u;  // = WG * RPT * TT

const UNIT_COLS: u32 = 32u;

@group(0) @binding(6) var<storage, read> qs: array<u32>;
@group(0) @binding(7) var<storage, read> scales: array<u32>;
@group(0) @binding(8) var<storage, read> group_rows: array<u32>;

var<private> qb: array<u32, 4>;
var<private> sb: array<u32, 4>;
var<private> xr: array<u32, 8>;
var<private> tile_n: u32;     // the tile's tokens (nt), for SKIP
var<private> acc: array<f32, 32>;

// Adds columns 32u + 8c .. +8 (part c of unit u) of the invocation's rows, with scales dm[i],
// to the sums of every token. c is a literal at every call, so the shifts fold.
fn part(dm: array<vec2<f32>, 4>, u: u32, c: u32) {
    var lo: array<vec4<f32>, 4>;
    var hi: array<vec4<f32>, 4>;
    for (var i = 0u; i < RPT; i++) {
        let q = bits_codes(qb[i] + u * BITS, c);
        lo[i] = bits_values(q[0], dm[i]);
        hi[i] = bits_values(q[1], dm[i]);
    }
    for (var j = 0u; j < TT; j++) {
        if (SKIP && j >= tile_n) {
            break;
        }
        let xo = xr[j] + 8u * u + 2u * c;
        let x0 = x[xo];
        let x1 = x[xo + 1u];
        for (var i = 0u; i < RPT; i++) {
            acc[i * 8u + j] += dot(lo[i], x0) + dot(hi[i], x1);
        }
    }
}

// Adds unit u (columns 32u .. 32u+32) of the invocation's rows (rows are whole units: `half`
// never holds).
fn unit(u: u32, half: bool) {
    var dm0: array<vec2<f32>, 4>;
    var dm1: array<vec2<f32>, 4>;
    for (var i = 0u; i < RPT; i++) {
        dm0[i] = bits_scale(sb[i], u, 0u);
        dm1[i] = dm0[i];
        if (SCALES == 2u && SUB == 16u) {
            dm1[i] = bits_scale(sb[i], u, 1u);
        }
    }
    part(dm0, u, 0u);
    part(dm0, u, 1u);
    part(dm1, u, 2u);
    part(dm1, u, 3u);
}

// Points row i of the invocation at row `row` of the weights.
fn set_row(i: u32, row: u32) {
    qb[i] = row * 4u * params.row_vec4s;
    sb[i] = row * params.scale_stride;
}

#include "matmul_rows.wgsl"
#include "bits_format.wgsl"
