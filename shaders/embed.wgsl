// embed.wgsl — token embeddings from one row chunk of a packed table:
//   out[t, :] = dequantize(table[token_ids[t], :]) * multiplier   for t < n_tokens
//
// The table ([vocab, cols], a GpuMatrix) may be split into row chunks (one binding each); one
// op per chunk writes only the tokens whose id falls in its rows row0 .. row0 + rows. The op of
// the last chunk (zero_beyond = 1) writes zeros for ids at or past its end, so an out-of-range
// id never reads out of bounds and never leaves stale values (hosts reject such ids anyway).
//
// Formats (override constant FORMAT), element e of row r (row-local index r = id - row0):
//   0 F32        value = bitcast<f32>(qs[r * row_stride + e])
//   1 Int8       word = qs[r * row_stride + e / 4], q = signed byte (e % 4) (bits 8j..8j+8),
//                value = s * q, s = bitcast<f32>(scales[r * scale_stride + e / group])
//   2 Int4       word = qs[r * row_stride + e / 8], q = nibble (e % 8) (bits 4j..4j+4), unsigned,
//                (d, m) = unpack2x16float(scales[r * scale_stride + e / group]), value = d * q + m
//   3 Int4 wide  as 2, with d, m = bitcast<f32> of scales[r * scale_stride + 2 * (e / group)] and
//                the word after
//   4 Bits       bits_format.wgsl (included): unit e / 32 of the row, at qs[r * row_stride +
//                (e / 32) * BITS], scales from r * scale_stride
// (d * q is exact for the tables flint builds, so a fused multiply-add gives the same value.)
//
// Bindings (group 0):
//   0 params     uniform  { cols: u32, row0: u32, rows: u32, row_stride: u32 (u32 words per row
//                          of qs), scale_stride: u32 (u32 per row of scales), group: u32,
//                          zero_beyond: u32 (0|1), multiplier: f32 }
//   1 step       uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 token_ids  storage read  u32 [>= n_tokens]
//   3 qs         storage read  u32 [rows * row_stride] (the chunk's rows)
//   4 scales     storage read  u32 [rows * scale_stride] (a placeholder for F32)
//   5 out        storage rw    f32 [n_tokens, cols]
// Dispatch: (max_tokens, 1, 1) workgroups of WG threads, one workgroup per token; thread i
// handles words i, i + WG, ... of the row (1, 4 or 8 elements each; Bits: parts of 8 elements). Workgroups with
// t >= n_tokens, or whose id is another chunk's, return at once.

override WG: u32 = 64u;
override FORMAT: u32 = 0u;

struct Params {
    cols: u32,
    row0: u32,
    rows: u32,
    row_stride: u32,
    scale_stride: u32,
    group: u32,
    zero_beyond: u32,
    multiplier: f32,
}
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> token_ids: array<u32>;
@group(0) @binding(3) var<storage, read> qs: array<u32>;
@group(0) @binding(4) var<storage, read> scales: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Elements per word of qs.
fn per_word() -> u32 {
    switch (FORMAT) {
        case 0u: { return 1u; }
        case 1u: { return 4u; }
        default: { return 8u; }
    }
}

// Element j of word `word`, in group `g`, of chunk row r.
fn value(word: u32, j: u32, r: u32, g: u32) -> f32 {
    switch (FORMAT) {
        case 0u: {
            return bitcast<f32>(word);
        }
        case 1u: {
            let q = extractBits(bitcast<i32>(word), 8u * j, 8u);
            return bitcast<f32>(scales[r * params.scale_stride + g]) * f32(q);
        }
        case 2u: {
            let dm = unpack2x16float(scales[r * params.scale_stride + g]);
            return dm.x * f32(extractBits(word, 4u * j, 4u)) + dm.y;
        }
        default: {
            let at = r * params.scale_stride + 2u * g;
            let d = bitcast<f32>(scales[at]);
            let m = bitcast<f32>(scales[at + 1u]);
            return d * f32(extractBits(word, 4u * j, 4u)) + m;
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.x;
    if (t >= step.n_tokens) {
        return;
    }
    let id = token_ids[t];
    let cols = params.cols;
    let out_base = t * cols;
    if (id < params.row0) {
        return;
    }
    let r = id - params.row0;
    if (r >= params.rows) {
        if (params.zero_beyond != 0u) {
            for (var e = lid; e < cols; e += WG) {
                out[out_base + e] = 0.0;
            }
        }
        return;
    }
    if (FORMAT == 4u) {
        for (var p = lid; p < cols / 8u; p += WG) {
            let u = p / 4u;
            let c = p % 4u;
            let q = bits_codes(r * params.row_stride + u * BITS, c);
            let dm = bits_scale(r * params.scale_stride, u, c / 2u);
            let v = array<vec4<f32>, 2>(bits_values(q[0], dm), bits_values(q[1], dm));
            for (var j = 0u; j < 8u; j++) {
                out[out_base + 8u * p + j] = v[j / 4u][j % 4u] * params.multiplier;
            }
        }
        return;
    }
    let epw = per_word();
    let words = (cols + epw - 1u) / epw;
    for (var w = lid; w < words; w += WG) {
        let word = qs[r * params.row_stride + w];
        for (var j = 0u; j < epw; j++) {
            let e = w * epw + j;
            if (e < cols) {
                out[out_base + e] = value(word, j, r, e / max(params.group, 1u)) * params.multiplier;
            }
        }
    }
}

#include "bits_format.wgsl"
