// generate_int4.wgsl — seeded INT4 weights written straight into a GpuMatrix chunk (no file, no
// host copy). Every value comes from a counter-based hash of (seed, matrix id, index), so any
// chunk of any matrix can be generated independently and the CPU twin
// (quant::generated::int4_matrix) gives the same bits.
//
//   key(stream)      = mix(seed ^ mix(2 * id + stream))          stream 0: values, 1: scales
//   rnd(key, i)      = mix(mix(i ^ key) + key)
//   mix(x)           = lowbias32: x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
//   qs word (R, w)   = rnd(key(0), R * row_words + w)            R = row0 + r, the matrix row; w < row_words
//                      (8 nibbles = 8 values q in 0..15); words w >= row_words (row padding) are 0
//   scale (R, g)     = pack2x16float(d, m) as bits: d = d0 + (rnd(key(1), R * groups + g) & 63) in f16
//                      bits (d0's low 6 mantissa bits are 0: d spans d0 .. d0 * 1.06), and m = -8 d
//                      (d's bits with the exponent raised by 3 and the sign set: exact, as GGUF Q4_0),
//                      so w = d * q + m = d * (q - 8).
//
// Bindings (group 0):
//   0 params  uniform  { rows, row_words, row_vec4s, groups, row0, seed, id, d0_bits, blocks_x, _pad x3 }
//             rows: rows of this chunk; row_words: cols / 8; row_vec4s: padded row length in vec4s;
//             groups: groups per row; row0: the chunk's first row in the matrix; d0_bits: f16 bits
//   1 qs      storage rw  u32 [rows, 4 * row_vec4s]   (the chunk's values, rows padded)
//   2 scales  storage rw  u32 [rows, groups]          (f16 pairs, low half d, high half m)
// Dispatch: (blocks_x, blocks_y, 1) workgroups of WG threads; thread i = (wg.y * blocks_x + wg.x)
// * WG + local index writes qs word i and scale word i, where they exist (i < rows * 4 * row_vec4s,
// resp. i < rows * groups); the grid covers the larger of the two counts.

override WG: u32 = 256u;

struct Params {
    rows: u32,
    row_words: u32,
    row_vec4s: u32,
    groups: u32,
    row0: u32,
    seed: u32,
    id: u32,
    d0_bits: u32,
    blocks_x: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> qs: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales: array<u32>;

fn mix(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn rnd(key: u32, i: u32) -> u32 {
    return mix(mix(i ^ key) + key);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * params.blocks_x + wg.x) * WG + lid;
    let row_len = 4u * params.row_vec4s;
    if (i < params.rows * row_len) {
        let r = i / row_len;
        let w = i % row_len;
        var word = 0u;
        if (w < params.row_words) {
            let key = mix(params.seed ^ mix(2u * params.id));
            word = rnd(key, (params.row0 + r) * params.row_words + w);
        }
        qs[i] = word;
    }
    if (i < params.rows * params.groups) {
        let key = mix(params.seed ^ mix(2u * params.id + 1u));
        let d = params.d0_bits + (rnd(key, params.row0 * params.groups + i) & 63u);
        let m = (d + (3u << 10u)) | 0x8000u;
        scales[i] = d | (m << 16u);
    }
}
