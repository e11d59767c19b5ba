// sample_argmax.wgsl — first half of the GPU sampler: the argmax of each block of BLOCK logits,
// ties to the lowest id (float comparison), for sample.wgsl to finish:
//   partials[2 b] = bits of max(logits[b * BLOCK .. (b + 1) * BLOCK]), partials[2 b + 1] = its lowest id
// (ids are token ids, 0 .. vocab - 1). Spread over many workgroups, the one full pass that every
// draw needs (greedy draws need nothing else) runs at the GPU's width, not one workgroup's.
//
// Bindings (group 0):
//   0 params    uniform  { vocab: u32, last_row: u32, _pad: u32, _pad: u32 }
//               last_row != 0: logits hold [n_tokens, vocab] rows and the last is read
//   1 step      uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 logits    storage read   f32 [vocab] (or [n_tokens, vocab])
//   3 partials  storage rw     u32 [2 * ceil(vocab / BLOCK)]
// Dispatch: (ceil(vocab / BLOCK), 1, 1) workgroups of WG = 256 threads; thread t of block b
// reads b * BLOCK + t + j * WG, j < BLOCK / WG (coalesced, all loads issued before use), then a
// tree reduction over (value, id).

const WG: u32 = 256u;
const PER_THREAD: u32 = 16u;
const BLOCK: u32 = 4096u; // WG * PER_THREAD
const NONE: u32 = 0xffffffffu;

struct Params { vocab: u32, last_row: u32, _pad0: u32, _pad1: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<u32>;

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

fn load4(base: u32, i: u32, last: u32) -> vec4<f32> {
    return vec4<f32>(
        logits[base + min(i, last)],
        logits[base + min(i + WG, last)],
        logits[base + min(i + 2u * WG, last)],
        logits[base + min(i + 3u * WG, last)],
    );
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let vocab = params.vocab;
    var base = 0u;
    if (params.last_row != 0u) {
        base = (step.n_tokens - 1u) * vocab;
    }
    let last = vocab - 1u;
    let i0 = wg.x * BLOCK + lid;
    let a = load4(base, i0, last);
    let b = load4(base, i0 + 4u * WG, last);
    let c = load4(base, i0 + 8u * WG, last);
    let d = load4(base, i0 + 12u * WG, last);
    var bv = 0.0;
    var bi = NONE;
    for (var j = 0u; j < PER_THREAD; j++) {
        let i = i0 + j * WG;
        var v: f32;
        switch (j / 4u) {
            case 0u: { v = a[j % 4u]; }
            case 1u: { v = b[j % 4u]; }
            case 2u: { v = c[j % 4u]; }
            default: { v = d[j % 4u]; }
        }
        if (i < vocab && (bi == NONE || v > bv)) {
            bv = v;
            bi = i;
        }
    }
    red_v[lid] = bv;
    red_i[lid] = bi;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let ov = red_v[lid + stride];
            let oi = red_i[lid + stride];
            let mine = red_i[lid];
            if (oi != NONE && (mine == NONE || ov > red_v[lid] || (ov == red_v[lid] && oi < mine))) {
                red_v[lid] = ov;
                red_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partials[2u * wg.x] = bitcast<u32>(red_v[0]);
        partials[2u * wg.x + 1u] = red_i[0];
    }
}
