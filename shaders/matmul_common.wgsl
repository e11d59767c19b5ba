// matmul_common.wgsl — included (#include, see gpu::shaders) by every matmul kernel:
// matmul_f32, matmul_int8, matmul_int4 and matmul_int4_sg. It holds their parameters, the
// bindings they share (0-5), where a workgroup's work lies in each use (dense, routed expert
// per slot, grouped experts: see matmul_int4.wgsl's header) and the epilogue that writes an
// output (bias, SwiGLU pairs, store or residual add).
// The including kernel declares the overrides RPT, TT and PAIR, and group_rows (its binding
// after the weights).

struct Params {
    rows: u32,            // rows in this chunk
    cols: u32,
    row_vec4s: u32,       // vec4 units per row of qs
    scale_stride: u32,    // u32 per row of scales
    row0: u32,            // the chunk's first row in the whole matrix
    out_stride: u32,
    blocks_x: u32,
    has_bias: u32,
    k: u32,               // 0: dense; else expert slots per token
    rows_per_expert: u32,
    expert0: u32,
    experts: u32,
    x_per_slot: u32,
    grouped: u32,         // 1: grouped mode (k > 0)
    pair_rows: u32,       // PAIR: the up row of gate row r is r + pair_rows (0 otherwise)
    add: u32,             // 1: out += add_scale * y (a residual add); 0: out = y
    add_scale: f32,
    x_stride4: u32,       // vec4s per row of x (cols / 4, or wider rows read in part)
    _pad1: u32,
    _pad2: u32,
}
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> expert_ids: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
// What one workgroup computes: nt tokens (0: nothing) of rows first_row .. first_row + nrows of
// the binding; token j < nt reads x row xrow[j] and writes out[orow[j] + r].
struct Work {
    nt: u32,
    first_row: u32,
    nrows: u32,
    xrow: array<u32, 8>,
    orow: array<u32, 8>,
}

// The work of row block `block` and item `item` (a token tile, a slot or a grouped tile), for
// blocks of `orows` output rows.
fn assign(block: u32, item: u32, orows: u32) -> Work {
    var work: Work;
    var nt = 0u;
    var first_row = 0u;
    var row_limit = 0u;
    if (params.grouped != 0u) {
        // Tile `item` of the grouping (expert_ids holds the tiles): up to TT (token, slot) pairs
        // of one expert, gathered from x and scattered to their slots' out rows.
        var first = 0u;
        if (item < expert_ids[0]) {
            let e = expert_ids[1u + 3u * item];
            if (e >= params.expert0 && e - params.expert0 < params.experts) {
                nt = min(expert_ids[3u + 3u * item], TT);
                first = expert_ids[2u + 3u * item];
                let base = (e - params.expert0) * params.rows_per_expert;
                first_row = base + block * orows;
                row_limit = base + params.rows_per_expert - params.pair_rows;
            }
        }
        for (var j = 0u; j < TT; j++) {
            var pair = 0u;
            if (nt > 0u) {
                pair = group_rows[first + min(j, nt - 1u)];
            }
            work.xrow[j] = select(pair / max(params.k, 1u), pair, params.x_per_slot != 0u);
            work.orow[j] = pair * params.out_stride + block * orows;
        }
    } else if (params.k == 0u) {
        let t0 = item * TT;
        if (t0 < step.n_tokens) {
            nt = min(TT, step.n_tokens - t0);
        }
        first_row = block * orows;
        row_limit = params.rows - params.pair_rows;
        for (var j = 0u; j < TT; j++) {
            work.xrow[j] = t0 + min(j, max(nt, 1u) - 1u);
            work.orow[j] = (t0 + j) * params.out_stride + params.row0 + first_row;
        }
    } else {
        let slot = item;
        if (slot < step.n_tokens * params.k) {
            let e = expert_ids[slot];
            if (e >= params.expert0 && e - params.expert0 < params.experts) {
                nt = 1u;
                let base = (e - params.expert0) * params.rows_per_expert;
                first_row = base + block * orows;
                row_limit = base + params.rows_per_expert - params.pair_rows;
            }
        }
        for (var j = 0u; j < TT; j++) {
            work.xrow[j] = select(slot / max(params.k, 1u), slot, params.x_per_slot != 0u);
            work.orow[j] = slot * params.out_stride + block * orows;
        }
    }
    if (row_limit > first_row) {
        work.nrows = min(orows, row_limit - first_row);
    }
    work.nt = nt;
    work.first_row = first_row;
    return work;
}

// Writes output element i: stored, or added to what is there (a residual add in the epilogue).
fn store(i: u32, v: f32) {
    if (params.add != 0u) {
        out[i] += params.add_scale * v;
    } else {
        out[i] = v;
    }
}

// The output row (of the block) of row i of thread group g (PAIR: i and i + RPT / 2 share one).
fn out_row(g: u32, i: u32) -> u32 {
    if (PAIR) {
        return g * max(RPT / 2u, 1u) + i % max(RPT / 2u, 1u);
    }
    return g * RPT + i;
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// Writes output row r of the block for token j, from its sum v (PAIR: v is the gate row's sum
// and up the up row's).
fn emit(work: Work, r: u32, j: u32, v: f32, up: f32) {
    var y = v;
    if (params.has_bias != 0u) {
        y += bias[params.row0 + work.first_row + r];
    }
    if (PAIR) {
        y = silu(y) * up;
    }
    store(work.orow[j] + r, y);
}
