// read_bandwidth.wgsl — the streaming-read bound: how fast a plain WGSL kernel reads memory on
// this device. out[i] = XOR of the four words of every vec4 that invocation i read (the XOR keeps
// the loads from being optimised away and lets a test check every word was read once).
//
// Bindings (group 0):
//   0 params  uniform  { vec4s: u32, per_wg: u32, _pad0: u32, _pad1: u32 }
//             vec4s: length of src; per_wg: vec4s each workgroup streams (a multiple of 4 * WG)
//   1 src     storage read  vec4<u32> [vec4s]
//   2 out     storage rw    u32 [workgroups * WG]
// Dispatch: (ceil(vec4s / per_wg), 1, 1) workgroups of WG invocations. Workgroup w streams the
// contiguous range [w * per_wg, (w + 1) * per_wg) ∩ [0, vec4s): in each step the WG invocations
// read WG neighbouring vec4s (invocation l the l-th), four steps per loop trip.

override WG: u32 = 64u;

struct Params { vec4s: u32, per_wg: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let begin = wg.x * params.per_wg;
    let end = min(begin + params.per_wg, params.vec4s);
    var acc = vec4<u32>(0u);
    var i = begin + lid;
    // Four loads in flight per trip while all four are in range.
    for (; i + 3u * WG < end; i += 4u * WG) {
        acc ^= src[i] ^ src[i + WG] ^ src[i + 2u * WG] ^ src[i + 3u * WG];
    }
    for (; i < end; i += WG) {
        acc ^= src[i];
    }
    out[wg.x * WG + lid] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
