// moe_group.wgsl — groups a prefill chunk's (token, slot) pairs by expert, so that an expert
// matmul can run each expert once over all of its tokens.
//
// Input: expert_ids[t * k + s] (moe_route's output, u32 [T, k], T = step.n_tokens). Let
// r = t * k + s be the pair's "row": the row of x's token is t = r / k, and r is also the row of
// expert_out ([T * k, dim], see moe_combine) that the expert's output for this pair goes to.
// Output, for e < num_experts (E):
//   count[e]  = #{ r < T * k : expert_ids[r] == e }
//   offset[e] = count[0] + ... + count[e - 1]                     (exclusive prefix sum)
//   expert_ranges[2 * e] = offset[e], expert_ranges[2 * e + 1] = count[e]
//   rows[offset[e] + j], j < count[e]: the rows r with expert_ids[r] == e, ascending
//       (so ascending token: moe_route never picks an expert twice for one token).
//       rows[0 .. T * k] is therefore a permutation of 0 .. T * k - 1 sorted by (expert, r).
//   active_experts[0] = the number of experts with count > 0; active_experts[1 + j] = the j-th
//       such expert, ascending (so a dispatch over E workgroups can give workgroup j expert
//       active_experts[1 + j] and let j >= active_experts[0] return).
//   tiles: each expert's rows cut into tiles of at most `tile` rows, experts ascending:
//       tiles[0] = the number of tiles n; tile i < n is (expert, first, count) at
//       tiles[1 + 3i ..]: rows[first .. first + count] of that expert. n <= ceil(T*k / tile) plus
//       the number of active experts, so a grouped matmul dispatched over that many tiles never
//       needs the host to know the routing (matmul_*.wgsl, grouped mode).
// Ids >= E are not grouped (moe_route never writes them); rows[] then ends short of T * k.
// Nothing past rows[T * k - 1] is written.
//
// Bindings (group 0):
//   0 params         uniform  { num_experts: u32, top_k: u32, tile: u32, _pad: u32 }
//   1 step           uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 expert_ids     storage read   u32 [T, k]
//   3 expert_ranges  storage rw     u32 [E, 2]   (offset, count)
//   4 rows           storage rw     u32 [max_tokens * k]
//   5 active_experts storage rw     u32 [1 + E]
//   6 tiles          storage rw     u32 [1 + 3 * max tiles]
// Overrides: WG (threads, 256), E (= num_experts), WORDS (mask words per expert), MASKS (= E * WORDS).
// Dispatch: (1, 1, 1), one workgroup. Phases: (1) counts with workgroup atomics (integer, so
// order-free); (2) thread 0 forms offsets, ranges and the active list, and each expert's
// cursor = its offset; (3) per chunk of 32 * WORDS tokens: each (token, slot) pair sets its
// token's bit in its expert's token mask (atomicOr: order-free), then writes its row at
// cursor[e] + the number of mask bits below its token (so an expert's rows come out in token
// order, whatever the thread schedule), and the cursors advance by the mask populations.
// This needs each token's k experts to be distinct, as moe_route makes them.

override WG: u32 = 256u;
override E: u32 = 128u;
override WORDS: u32 = 16u;
override MASKS: u32 = 2048u;

struct Params { num_experts: u32, top_k: u32, tile: u32, _pad0: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> expert_ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> expert_ranges: array<u32>;
@group(0) @binding(4) var<storage, read_write> rows: array<u32>;
@group(0) @binding(5) var<storage, read_write> active_experts: array<u32>;
@group(0) @binding(6) var<storage, read_write> tiles: array<u32>;

var<workgroup> counts: array<atomic<u32>, E>;
var<workgroup> cursor: array<u32, E>;
var<workgroup> masks: array<atomic<u32>, MASKS>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n_experts = params.num_experts;
    let k = params.top_k;
    let n_tokens = step.n_tokens;
    let n = n_tokens * k;

    for (var e = lid; e < n_experts; e += WG) {
        atomicStore(&counts[e], 0u);
    }
    workgroupBarrier();
    for (var r = lid; r < n; r += WG) {
        let id = expert_ids[r];
        if (id < n_experts) {
            atomicAdd(&counts[id], 1u);
        }
    }
    workgroupBarrier();

    if (lid == 0u) {
        var offset = 0u;
        var n_active = 0u;
        var n_tiles = 0u;
        let tile = max(params.tile, 1u);
        for (var e = 0u; e < n_experts; e++) {
            let c = atomicLoad(&counts[e]);
            cursor[e] = offset;
            expert_ranges[2u * e] = offset;
            expert_ranges[2u * e + 1u] = c;
            if (c > 0u) {
                active_experts[1u + n_active] = e;
                n_active += 1u;
            }
            for (var s = 0u; s < c; s += tile) {
                tiles[1u + 3u * n_tiles] = e;
                tiles[2u + 3u * n_tiles] = offset + s;
                tiles[3u + 3u * n_tiles] = min(tile, c - s);
                n_tiles += 1u;
            }
            offset += c;
        }
        active_experts[0] = n_active;
        tiles[0] = n_tiles;
    }
    workgroupBarrier();

    let chunk = 32u * WORDS;
    for (var t0 = 0u; t0 < n_tokens; t0 += chunk) {
        let r_end = min(t0 + chunk, n_tokens) * k;
        for (var i = lid; i < n_experts * WORDS; i += WG) {
            atomicStore(&masks[i], 0u);
        }
        workgroupBarrier();
        for (var r = t0 * k + lid; r < r_end; r += WG) {
            let e = expert_ids[r];
            if (e < n_experts) {
                let tl = r / k - t0;
                atomicOr(&masks[e * WORDS + tl / 32u], 1u << (tl % 32u));
            }
        }
        workgroupBarrier();
        for (var r = t0 * k + lid; r < r_end; r += WG) {
            let e = expert_ids[r];
            if (e < n_experts) {
                let tl = r / k - t0;
                let w = tl / 32u;
                var pos = cursor[e];
                for (var j = 0u; j < w; j++) {
                    pos += countOneBits(atomicLoad(&masks[e * WORDS + j]));
                }
                pos += countOneBits(atomicLoad(&masks[e * WORDS + w]) & ((1u << (tl % 32u)) - 1u));
                rows[pos] = r;
            }
        }
        workgroupBarrier();
        for (var e = lid; e < n_experts; e += WG) {
            var c = 0u;
            for (var j = 0u; j < WORDS; j++) {
                c += countOneBits(atomicLoad(&masks[e * WORDS + j]));
            }
            cursor[e] += c;
        }
        workgroupBarrier();
    }
}
