// matmul_subgroup.wgsl — included (#include, see gpu::shaders) by the matmul kernels for devices
// with subgroups of 8 or more (matmul_int4_sg, matmul_bits_sg): their entry point. Each
// invocation computes RPT rows over all columns, in units of 32 columns; see
// matmul_int4_sg.wgsl's header for the dispatch and why. Includes matmul_common.wgsl.
// The including kernel declares the overrides RPT, WG, ROWS, TT, SKIP and PAIR; the private
// xr (its tokens' x rows, as vec4 indices), tile_n and acc (acc[j][i]: token j, row i); fn
// set_row(i, row), which points row i of the invocation at a row of the weights; and fn
// unit(u, l8, half), which adds unit u of its rows (its first 16 columns when half) to the sums
// of every token, lane l8 = subgroup lane % 8 loading x vec4 l8 of the unit for the others.

#include "matmul_common.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) sl: u32) {
    // Output rows per block: PAIR computes a gate and an up row for each.
    let orows = select(ROWS, ROWS / 2u, PAIR);
    let work = assign(wg.x + wg.z * params.blocks_x, wg.y, orows);
    let nt = work.nt;
    let nrows = work.nrows;
    tile_n = nt;

    for (var i = 0u; i < RPT; i++) {
        // PAIR: the invocation's first RPT / 2 rows are gate rows, the others their up rows.
        var row = work.first_row + min(out_row(lid, i), max(nrows, 1u) - 1u);
        if (PAIR && i >= RPT / 2u) {
            row += params.pair_rows;
        }
        set_row(i, row);
    }
    let xstride = params.x_stride4;
    for (var j = 0u; j < TT; j++) {
        // Tokens past nt repeat the last one (computed unless SKIP, never written).
        xr[j] = work.xrow[j] * xstride;
        acc[j] = vec4<f32>(0.0);
    }
    let l8 = sl % 8u;
    if (nt > 0u && nrows > 0u) {
        let full = params.cols / 32u;
        var u = 0u;
        for (; u + 1u < full; u += 2u) {
            unit(u, l8, false);
            unit(u + 1u, l8, false);
        }
        if (u < full) {
            unit(u, l8, false);
        }
        // cols = 16 (mod 32) (INT4 in groups of 16 only): the last unit holds 16 columns.
        if (params.cols % 32u != 0u) {
            unit(full, l8, true);
        }
    }
    for (var i = 0u; i < select(RPT, RPT / 2u, PAIR); i++) {
        let r = out_row(lid, i);
        for (var j = 0u; j < TT; j++) {
            if (r < nrows && j < nt) {
                emit(work, r, j, acc[j][i], acc[j][min(i + RPT / 2u, RPT - 1u)]);
            }
        }
    }
}

