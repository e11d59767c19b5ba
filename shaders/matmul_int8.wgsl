// matmul_int8.wgsl — y = W x with W in INT8: out[t, r] = sum_c W[r, c] * x[t, c] (+ bias[r]),
// W[r, c] = s * q, q the signed 8-bit value, s the f32 scale of c's group of GROUP columns.
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
//   6 qs          storage read  vec4<u32> [rows, row_vec4s]: 4 bytes per u32, element 4w+j in bits
//                               8j..8j+7 (two's complement); one vec4 unit = 16 columns
//   7 scales      storage read  u32 [rows, scale_stride]: f32 bits of s, one per group
//   8 group_rows  storage read  u32 [T*k]: moe_group's grouped rows (read in grouped mode only)
// Dispatch: (blocks_x, items, ceil(row blocks / blocks_x)) workgroups of WG = ROWS/RPT*TPR threads.
//   Row block b = wg.x + wg.z * blocks_x covers ROWS rows (of the chunk, or of one expert);
//   item wg.y is a tile of TT tokens (dense), one slot (expert, TT = 1) or one tile (grouped);
//   tiles past n_tokens (or past the grouping's tiles), slots past n_tokens*k, work routed to
//   another chunk, and rows past the end do no work and write nothing.
//   A row block is handled by WG / TPR groups of TPR threads, each group computing RPT rows: thread
//   `lane` of a group reads vec4 units lane, lane+TPR, ... (16 columns each, 4 units per loop trip)
//   of its RPT rows, so TPR neighbouring threads stream contiguous pieces of the rows; each x vec4
//   it loads serves RPT rows. Each thread keeps RPT x TT sums; the TPR partial sums of a row are
//   added in workgroup memory.

override ROWS: u32 = 8u;      // rows per workgroup = (WG / TPR) * RPT
override TPR: u32 = 8u;       // threads per row
override RPT: u32 = 1u;       // rows per thread, at most 4
override WG: u32 = 64u;       // threads per workgroup
override TT: u32 = 1u;        // tokens per tile, at most 8
override SKIP: bool = false; // skip a tile's tokens past nt (grouped tiles, often part-filled)
override PAIR: bool = false; // SwiGLU pairs: out = silu(gate row) * up row (RPT even)
override PARTIAL: u32 = 64u;  // = WG * RPT * TT
override GROUP: u32 = 32u;    // columns per scale: a multiple of 16

// Columns per unit of the weights (what unit() adds).
const UNIT_COLS: u32 = 16u;

@group(0) @binding(6) var<storage, read> qs: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> scales: array<u32>;
@group(0) @binding(8) var<storage, read> group_rows: array<u32>;

const SHIFTS = vec4<u32>(24u, 16u, 8u, 0u);

// The invocation's rows and tokens: where its rows start in qs and scales, where its tokens' x
// rows start (vec4 index), and its sums acc[i * 8 + j] (row i < RPT, token j < TT).
var<private> qb: array<u32, 4>;
var<private> sb: array<u32, 4>;
var<private> xr: array<u32, 8>;
var<private> tile_n: u32;     // the tile's tokens (nt), for SKIP
var<private> acc: array<f32, 32>;

// The 4 signed bytes of w times s.
fn bytes(w: u32, s: f32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << SHIFTS) >> vec4<u32>(24u)) * s;
}

// Adds unit u (columns 16u .. 16u+16) of the invocation's rows to the sums of every token.
fn unit(u: u32, half: bool) {
    var w: array<array<vec4<f32>, 4>, 4>;
    for (var i = 0u; i < RPT; i++) {
        let q = qs[qb[i] + u];
        let s = bitcast<f32>(scales[sb[i] + (16u * u) / GROUP]);
        w[i][0] = bytes(q.x, s);
        w[i][1] = bytes(q.y, s);
        w[i][2] = bytes(q.z, s);
        w[i][3] = bytes(q.w, s);
    }
    for (var j = 0u; j < TT; j++) {
        if (SKIP && j >= tile_n) {
            break;
        }
        let xo = xr[j] + 4u * u;
        let x0 = x[xo];
        let x1 = x[xo + 1u];
        let x2 = x[xo + 2u];
        let x3 = x[xo + 3u];
        for (var i = 0u; i < RPT; i++) {
            acc[i * 8u + j] += dot(w[i][0], x0) + dot(w[i][1], x1) + dot(w[i][2], x2) + dot(w[i][3], x3);
        }
    }
}

// Points row i of the invocation at row `row` of the weights.
fn set_row(i: u32, row: u32) {
    qb[i] = row * params.row_vec4s;
    sb[i] = row * params.scale_stride;
}

#include "matmul_rows.wgsl"
