// bits_format.wgsl — included (#include, see gpu::shaders) by the kernels that read a matrix in
// flint's Bits format (quant::packed::Format::Bits: ggml's 5-, 3- and 2-bit, k-quant, IQ4 and
// MXFP4 blocks, repacked without loss): matmul_bits and embed. CPU twin:
// PackedMatrix::dequantize_row.
//
// A row is units of 32 elements, BITS u32 words each: a low plane of LOW-bit fields (LOW = 4
// from 4 bits up, else 2), then a high plane of the remaining HIGH = BITS - LOW bits (0-2).
// Element k of a unit has its low bits at bit (k * LOW) % 32 of word (k * LOW) / 32 and its high
// bits at bit (k * HIGH) % 32 of word LOW + (k * HIGH) / 32: code = low | high << LOW.
// A code becomes a value v (CODE 0: q - OFFSET; 1: IQ4's codebook; 2: MXFP4's, doubled), and
// w = d * v + m with (d, m) from the scales (SCALES):
//   0 per unit g: unpack2x16float(scales[base + g]) = (d, m)
//   1 per unit g: the E8M0 byte g % 4 of scales[base + g / 4]; d = 2^(e - 128), m = 0
//   2 per 256 elements (super-block s = g / 8): 5 words at base + 5s: unpack2x16float = (d, dmin),
//     then 16 bytes of sub-block scales, one per SUB elements: MINS = false: byte j is the signed
//     scale sc of sub-block j; MINS, SUB = 16: sc in the low nibble, mn in the high; MINS,
//     SUB = 32: sc in byte j, mn in byte 8 + j. Sub-block (d, m) = (d * sc, -(dmin * mn)).
// The includer declares `qs: array<u32>` and `scales: array<u32>` (storage, read).

override BITS: u32 = 5u;
override CODE: u32 = 0u;
override OFFSET: u32 = 0u;
override SCALES: u32 = 0u;
override SUB: u32 = 32u;
override MINS: bool = false;
// The planes' widths, set by the host from quant::packed::bit_planes (the one rule).
override LOW: u32 = 4u;
override HIGH: u32 = 1u;

// The codebook (CODE 1, 2): its 16 signed byte levels, four per word, little-endian (set by
// the host from quant::blocks' tables).
override CB0: u32 = 0u;
override CB1: u32 = 0u;
override CB2: u32 = 0u;
override CB3: u32 = 0u;

// The codebook levels of four codes: select the word, then the byte (selects and shifts: a
// runtime-indexed array is slow on CPU Vulkan).
fn levels4(q: vec4<u32>) -> vec4<f32> {
    let odd = (q & vec4<u32>(4u)) != vec4<u32>(0u);
    let w = select(select(vec4<u32>(CB0), vec4<u32>(CB1), odd), select(vec4<u32>(CB2), vec4<u32>(CB3), odd),
                   q >= vec4<u32>(8u));
    let b = w << ((vec4<u32>(3u) - (q & vec4<u32>(3u))) * 8u);
    return vec4<f32>(bitcast<vec4<i32>>(b) >> vec4<u32>(24u));
}

// Byte j of the words from `at` on.
fn scale_byte(at: u32, j: u32) -> u32 {
    return (scales[at + j / 4u] >> (8u * (j % 4u))) & 255u;
}

// (d, m) for half h (elements 16h .. 16h + 16) of unit g of the row whose scales start at base;
// for CODE 0 the offset is folded in: w = fma(q, d, m).
fn bits_scale(base: u32, g: u32, h: u32) -> vec2<f32> {
    var dm: vec2<f32>;
    if (SCALES == 0u) {
        dm = unpack2x16float(scales[base + g]);
    } else if (SCALES == 1u) {
        let e = scale_byte(base, g);
        dm = vec2<f32>(bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << e, e < 2u)), 0.0);
    } else {
        let at = base + (g / 8u) * 5u;
        let dd = unpack2x16float(scales[at]);
        let j = select(g % 8u, 2u * (g % 8u) + h, SUB == 16u);
        let byte = scale_byte(at + 1u, j);
        var sc: f32;
        var mn = 0.0;
        if (!MINS) {
            sc = f32(extractBits(bitcast<i32>(byte), 0u, 8u));
        } else if (SUB == 16u) {
            sc = f32(byte & 15u);
            mn = f32(byte >> 4u);
        } else {
            sc = f32(byte);
            mn = f32(scale_byte(at + 1u, 8u + j));
        }
        dm = vec2<f32>(dd.x * sc, -(dd.y * mn));
    }
    if (CODE == 0u) {
        dm.y -= f32(OFFSET) * dm.x;
    }
    return dm;
}

// The codes of elements 8c .. 8c + 8 of the unit whose words start at qs[base], as two vec4.
fn bits_codes(base: u32, c: u32) -> array<vec4<u32>, 2> {
    let l = qs[base + (8u * c * LOW) / 32u] >> ((8u * c * LOW) % 32u);
    let ls = vec4<u32>(0u, 1u, 2u, 3u) * LOW;
    let lmask = vec4<u32>((1u << LOW) - 1u);
    var a = (vec4<u32>(l) >> ls) & lmask;
    var b = (vec4<u32>(l) >> (ls + 4u * LOW)) & lmask;
    if (HIGH > 0u) {
        let h = qs[base + LOW + (8u * c * HIGH) / 32u] >> ((8u * c * HIGH) % 32u);
        let hs = vec4<u32>(0u, 1u, 2u, 3u) * HIGH;
        let hmask = vec4<u32>((1u << HIGH) - 1u);
        a |= ((vec4<u32>(h) >> hs) & hmask) << vec4<u32>(LOW);
        b |= ((vec4<u32>(h) >> (hs + 4u * HIGH)) & hmask) << vec4<u32>(LOW);
    }
    return array<vec4<u32>, 2>(a, b);
}

// The values of four codes under (d, m) from bits_scale.
fn bits_values(q: vec4<u32>, dm: vec2<f32>) -> vec4<f32> {
    if (CODE == 0u) {
        return fma(vec4<f32>(q), vec4<f32>(dm.x), vec4<f32>(dm.y));
    }
    return levels4(q) * dm.x + dm.y;
}
