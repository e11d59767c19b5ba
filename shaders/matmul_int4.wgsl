// matmul_int4.wgsl — y = W x with W in flint's INT4 format: out[t, r] = sum_c W[r, c] * x[t, c] (+ bias[r]),
// W[r, c] = d * q + m, q the unsigned 4-bit value, (d, m) the scale and offset of c's group of GROUP columns.
//
// One kernel for four uses (params.k and params.grouped select):
//   dense (k = 0): decode (T = 1, a matvec streaming the weights) and prefill (T tokens; each weight
//     is read once per tile of TT tokens);
//   expert (k > 0): W holds E stacked experts of rows_per_expert rows; for slot s = t*k + j < T*k,
//     e = expert_ids[s], out[s, r] = sum_c W[e*rows_per_expert + r, c] * x[t or s, c] (x_per_slot).
//     This op's binding holds experts expert0 .. expert0+experts; slots routed elsewhere are skipped
//     (the op of the chunk holding their expert writes them).
//   grouped (k > 0, grouped = 1; prefill): the same outputs as expert, computed per expert over
//     its tokens: binding 3 holds moe_group's tiles (count, then (expert, first, count) per tile)
//     and binding 8 its grouped rows; item wg.y is tile i, whose pairs s = group_rows[first + j],
//     j < count <= TT, all routed to one expert, so each weight is read once per tile of TT pairs
//     instead of once per pair. Items past the tile count (the dispatch covers the most tiles any
//     routing can make) or whose expert another chunk holds do nothing. Grouped pipelines set
//     SKIP: a tile's tokens past its count are not computed (a branch in the inner loop that
//     slows the full tiles of decode and dense prefill on lavapipe, so only there).
// A matrix too large for one binding is split by rows into chunks, one op per chunk (row0 = the
// chunk's first row in the whole matrix).
//
// Epilogue, in every use: out = y (add = 0), or out += add_scale * y (add = 1: the residual add
// of o and of a dense down projection). PAIR (SwiGLU pairs; RPT even, no bias): the matrix
// holds, per FFN (expert), its gate rows then its up rows (pair_rows apart: GpuMatrix::pair);
// each thread computes RPT / 2 gate rows and their up rows, and writes silu(gate) * up to output
// row r of the FFN's pair_rows outputs. Rows, blocks and out_stride then count output rows.
//
// Bindings (group 0):
//   0 params      uniform  Params (below)
//   1 step        uniform  { n_tokens: u32, position: u32, ... } (gpu::step)
//   2 x           storage read  vec4<f32> [T_or_slots, cols/4]        (cols is a multiple of 16)
//   3 expert_ids  storage read  u32 [T, k]; grouped: moe_group's tiles (unused when k = 0)
//   4 bias        storage read  f32 [whole matrix rows]                (read when has_bias != 0)
//   5 out         storage rw    f32: dense [T, out_stride] (this chunk writes columns row0..row0+rows);
//                                    expert, grouped: [T*k, out_stride = rows_per_expert]
//   6 qs          storage read  vec4<u32> [rows, row_vec4s]: 8 nibbles per u32, element 8w+j in bits
//                               4j..4j+3; rows padded with zero words to a whole vec4 (32 columns)
//   7 scales      storage read  u32 [rows, scale_stride]: per group g, WIDE = 0: pack2x16float(d, m)
//                               at g; WIDE = 1: f32 bits of d at 2g, of m at 2g+1
//   8 group_rows  storage read  u32 [T*k]: moe_group's grouped rows (read in grouped mode only)
// Dispatch: (blocks_x, items, ceil(row blocks / blocks_x)) workgroups of WG = ROWS/RPT*TPR threads.
//   Row block b = wg.x + wg.z * blocks_x covers ROWS rows (of the chunk, or of one expert);
//   item wg.y is a tile of TT tokens (dense), one slot (expert, TT = 1) or one tile (grouped);
//   tiles past n_tokens (or past the grouping's tiles), slots past n_tokens*k, work routed to
//   another chunk, and rows past the end do no work and write nothing.
//   A row block is handled by WG / TPR groups of TPR threads, each group computing RPT rows: thread
//   `lane` of a group reads vec4 units lane, lane+TPR, ... (32 columns each, 4 units per loop trip)
//   of its RPT rows, so TPR neighbouring threads stream contiguous pieces of the rows; it
//   dequantizes each unit once per token tile, and each x vec4 it loads serves RPT rows. Each
//   thread keeps RPT x TT sums; the TPR partial sums of a row are added in workgroup memory.

override ROWS: u32 = 8u;      // rows per workgroup = (WG / TPR) * RPT
override TPR: u32 = 8u;       // threads per row
override RPT: u32 = 1u;       // rows per thread, at most 4
override WG: u32 = 64u;       // threads per workgroup
override TT: u32 = 1u;        // tokens per tile, at most 8
override SKIP: bool = false; // skip a tile's tokens past nt (grouped tiles, often part-filled)
override PAIR: bool = false; // SwiGLU pairs: out = silu(gate row) * up row (RPT even)
override PARTIAL: u32 = 64u;  // = WG * RPT * TT
override GROUP: u32 = 32u;    // columns per (d, m) group: 16, 32, 64 or 128
override WIDE: u32 = 0u;      // 1: f32 (d, m) pairs; 0: packed f16 pairs

// Columns per unit of the weights (what unit() adds).
const UNIT_COLS: u32 = 32u;

@group(0) @binding(6) var<storage, read> qs: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> scales: array<u32>;
@group(0) @binding(8) var<storage, read> group_rows: array<u32>;

const LO = vec4<u32>(0u, 4u, 8u, 12u);
const HI = vec4<u32>(16u, 20u, 24u, 28u);

// (d, m) of group g of the row whose scales start at `base`.
fn scale(base: u32, g: u32) -> vec2<f32> {
    if (WIDE != 0u) {
        return vec2<f32>(bitcast<f32>(scales[base + 2u * g]), bitcast<f32>(scales[base + 2u * g + 1u]));
    }
    return unpack2x16float(scales[base + g]);
}

fn nibbles(w: u32, shifts: vec4<u32>, dm: vec2<f32>) -> vec4<f32> {
    return fma(vec4<f32>((vec4<u32>(w) >> shifts) & vec4<u32>(15u)), vec4<f32>(dm.x), vec4<f32>(dm.y));
}

// The invocation's rows and tokens: where its rows start in qs and scales, where its tokens' x
// rows start (vec4 index), and its sums acc[i * 8 + j] (row i < RPT, token j < TT).
var<private> qb: array<u32, 4>;
var<private> sb: array<u32, 4>;
var<private> xr: array<u32, 8>;
var<private> tile_n: u32;     // the tile's tokens (nt), for SKIP
var<private> acc: array<f32, 32>;

// Adds columns 32u + 8w + 4h .. +4 (nibbles 4h..4h+4 of word w of unit u) of the invocation's
// rows, whose unit-u words are q[i] and scales dm[i], to the sums of every token.
fn part(q: array<vec4<u32>, 4>, dm: array<vec2<f32>, 4>, u: u32, w: u32, h: u32) {
    var wv: array<vec4<f32>, 4>;
    let shifts = select(LO, HI, h == 1u);
    for (var i = 0u; i < RPT; i++) {
        wv[i] = nibbles(q[i][w], shifts, dm[i]);
    }
    for (var j = 0u; j < TT; j++) {
        if (SKIP && j >= tile_n) {
            break;
        }
        let xv = x[xr[j] + 8u * u + 2u * w + h];
        for (var i = 0u; i < RPT; i++) {
            acc[i * 8u + j] += dot(wv[i], xv);
        }
    }
}

// Adds unit u (columns 32u .. 32u+32, or the first 16 when `half`) of the invocation's rows.
fn unit(u: u32, half: bool) {
    var q: array<vec4<u32>, 4>;
    var dm0: array<vec2<f32>, 4>;
    var dm1: array<vec2<f32>, 4>;
    for (var i = 0u; i < RPT; i++) {
        q[i] = qs[qb[i] + u];
        dm0[i] = scale(sb[i], (32u * u) / GROUP);
        dm1[i] = dm0[i];
        if (GROUP == 16u) {
            dm1[i] = scale(sb[i], 2u * u + 1u);
        }
    }
    part(q, dm0, u, 0u, 0u);
    part(q, dm0, u, 0u, 1u);
    part(q, dm0, u, 1u, 0u);
    part(q, dm0, u, 1u, 1u);
    if (!half) {
        part(q, dm1, u, 2u, 0u);
        part(q, dm1, u, 2u, 1u);
        part(q, dm1, u, 3u, 0u);
        part(q, dm1, u, 3u, 1u);
    }
}

// Points row i of the invocation at row `row` of the weights.
fn set_row(i: u32, row: u32) {
    qb[i] = row * params.row_vec4s;
    sb[i] = row * params.scale_stride;
}

#include "matmul_rows.wgsl"
