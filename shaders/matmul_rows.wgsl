// matmul_rows.wgsl — included (#include, see gpu::shaders) by the matmul kernels that split
// each row across TPR threads (matmul_f32, matmul_int8, matmul_int4): their entry point and the
// sum of a row's partial sums. Includes matmul_common.wgsl.
// The including kernel declares the overrides ROWS, TPR, RPT, WG, TT, PARTIAL and PAIR;
// UNIT_COLS, the columns of one unit of its weights; the private xr (its tokens' x rows, as vec4
// indices), tile_n and acc (sums acc[i * 8 + j], row i < RPT, token j < TT); fn set_row(i, row),
// which points row i of the invocation at a row of the weights; and fn unit(u, half), which adds
// unit u of its rows (the first half of its columns when half) to the sums of every token.

#include "matmul_common.wgsl"

var<workgroup> partial: array<f32, PARTIAL>;

// Row i of thread group g for token j: the sum of the group's TPR partial sums.
fn row_sum(g: u32, i: u32, j: u32) -> f32 {
    let first = (g * TPR * RPT + i) * TT + j;
    var v = 0.0;
    for (var l = 0u; l < TPR; l++) {
        v += partial[first + l * RPT * TT];
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Output rows per block: PAIR computes a gate and an up row for each.
    let orows = select(ROWS, ROWS / 2u, PAIR);
    let work = assign(wg.x + wg.z * params.blocks_x, wg.y, orows);
    tile_n = work.nt;

    let g = lid / TPR;
    let lane = lid % TPR;
    // Rows past nrows compute a copy of the last row (never written): the loops then run in
    // workgroup-uniform control flow.
    for (var i = 0u; i < RPT; i++) {
        // PAIR: the invocation's first RPT / 2 rows are gate rows, the others their up rows.
        var row = work.first_row + min(out_row(g, i), max(work.nrows, 1u) - 1u);
        if (PAIR && i >= RPT / 2u) {
            row += params.pair_rows;
        }
        set_row(i, row);
    }
    let xstride = params.x_stride4;
    for (var j = 0u; j < TT; j++) {
        // Tokens past nt repeat the last one (computed unless SKIP, never written).
        xr[j] = work.xrow[j] * xstride;
    }
    for (var i = 0u; i < 32u; i++) {
        acc[i] = 0.0;
    }
    if (work.nt > 0u && work.nrows > 0u) {
        let full = params.cols / UNIT_COLS;
        var u = lane;
        for (; u + 3u * TPR < full; u += 4u * TPR) {
            unit(u, false);
            unit(u + TPR, false);
            unit(u + 2u * TPR, false);
            unit(u + 3u * TPR, false);
        }
        for (; u < full; u += TPR) {
            unit(u, false);
        }
        // A last half unit (INT4 in groups of 16: cols = 16 mod 32).
        if (params.cols % UNIT_COLS != 0u && lane == 0u) {
            unit(full, true);
        }
    }

    // Output rows per thread group; PAIR: row i's up row is i + RPT / 2.
    let per_group = select(RPT, RPT / 2u, PAIR);
    let up = min(RPT / 2u, RPT - 1u); // (clamped: an index in range when not PAIR)
    if (TPR == 1u) {
        for (var i = 0u; i < per_group; i++) {
            let r = out_row(g, i);
            for (var j = 0u; j < TT; j++) {
                if (r < work.nrows && j < work.nt) {
                    emit(work, r, j, acc[i * 8u + j], acc[min(i + up, RPT - 1u) * 8u + j]);
                }
            }
        }
        return;
    }
    for (var i = 0u; i < RPT; i++) {
        for (var j = 0u; j < TT; j++) {
            partial[(lid * RPT + i) * TT + j] = acc[i * 8u + j];
        }
    }
    workgroupBarrier();
    for (var n = lid; n < orows * TT; n += WG) {
        let r = n / TT;
        let j = n % TT;
        if (r < work.nrows && j < work.nt) {
            let gr = r / per_group;
            let i = r % per_group;
            var up_sum = 0.0;
            if (PAIR) {
                up_sum = row_sum(gr, i + RPT / 2u, j);
            }
            emit(work, r, j, row_sum(gr, i, j), up_sum);
        }
    }
}
