// moe_route.wgsl — MoE router: per token t, p = softmax(router_logits[t, :]) over all E experts
// (max-subtracted, f32), chosen = the k largest p, largest first, ties to the lower expert index
// (exactly reference::ops::top_k), and
//   expert_ids[t, s]     = chosen[s]
//   expert_weights[t, s] = p[chosen[s]]                                   (renormalize == 0)
//                        = p[chosen[s]] / (p[chosen[0]] + ... + p[chosen[k-1]])   (renormalize != 0)
// The renormalising sum is taken in top-k order, as the reference does. The shared expert's
// sigmoid gate is not computed here: moe_combine applies it.
//
// Bindings (group 0):
//   0 params          uniform  { num_experts: u32, top_k: u32, renormalize: u32, logit_offset: u32,
//                                 logit_stride: u32, _pad: 3 x u32 }
//   1 step            uniform  { n_tokens: u32, position: u32, ... } (see gpu::step); T = n_tokens
//   2 router_logits   storage read   f32 [T, logit_stride]: token t's logits at columns
//                                    logit_offset .. + num_experts (the router's matmul may add
//                                    the shared expert's gate logit as one more column)
//   3 expert_ids      storage rw     u32 [T, top_k]   (row t at t * top_k)
//   4 expert_weights  storage rw     f32 [T, top_k]
// Overrides: WG (threads per workgroup, a power of two >= 64), E (>= num_experts: sizes workgroup memory).
// Dispatch: (max_tokens, 1, 1) workgroups of WG threads, one workgroup per token; workgroups
// past n_tokens return at once. Threads take experts e = lid, lid + WG, ...; max and sum are
// tree reductions in workgroup memory; then each expert counts the experts before it in the
// order (p descending, index ascending), and those of rank < k write their slot; threads
// s < k then form the renormalising sum (each the same, in slot order) and write slot s.

override WG: u32 = 64u;
override E: u32 = 128u;

struct Params {
    num_experts: u32,
    top_k: u32,
    renormalize: u32,
    logit_offset: u32,
    logit_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> router_logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> expert_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> expert_weights: array<f32>;

var<workgroup> probs: array<f32, E>;
var<workgroup> red_v: array<f32, WG>;
// The picks, by slot (k <= 64 <= WG).
var<workgroup> pick_id: array<u32, 64>;
var<workgroup> pick_p: array<f32, 64>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.x;
    if (t >= step.n_tokens) {
        return;
    }
    let n = params.num_experts;
    let k = params.top_k;
    let base = t * params.logit_stride + params.logit_offset;

    // Max. The lowest finite f32, written exactly (a decimal literal that rounds past it is an error in Tint).
    var m = -0x1.fffffep+127f;
    for (var e = lid; e < n; e += WG) {
        m = max(m, router_logits[base + e]);
    }
    red_v[lid] = m;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            red_v[lid] = max(red_v[lid], red_v[lid + stride]);
        }
        workgroupBarrier();
    }
    let mx = red_v[0];
    workgroupBarrier();

    // exp and sum.
    var s = 0.0;
    for (var e = lid; e < n; e += WG) {
        let v = exp(router_logits[base + e] - mx);
        probs[e] = v;
        s += v;
    }
    red_v[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            red_v[lid] += red_v[lid + stride];
        }
        workgroupBarrier();
    }
    let total = red_v[0];
    for (var e = lid; e < n; e += WG) {
        probs[e] = probs[e] / total;
    }
    // Padding up to 64 experts, below every probability: it ranks after all of them.
    for (var e = n + lid; e < max(n, 64u); e += WG) {
        probs[e] = -1.0;
    }
    workgroupBarrier();

    // Each expert's rank in the order (p descending, index ascending): the top k write
    // themselves into their slot. The loop runs over at least 64 (padding counts for nothing):
    // on lavapipe the same loop with a trip count of 32 or less ran 10-40x slower per comparison
    // (an isolated call with 16 experts: 6.7 ms; padded: 0.2 ms).
    for (var e = lid; e < n; e += WG) {
        let p = probs[e];
        var rank = 0u;
        for (var j = 0u; j < max(n, 64u); j++) {
            let q = probs[j];
            rank += select(0u, 1u, q > p || (q == p && j < e));
        }
        if (rank < k) {
            pick_id[rank] = e;
            pick_p[rank] = p;
        }
    }
    workgroupBarrier();

    // Thread s < k writes slot s; each forms the same sum, in slot order.
    if (lid < k) {
        var sum = 0.0;
        for (var slot = 0u; slot < k; slot++) {
            sum += pick_p[slot];
        }
        var w = pick_p[lid];
        if (params.renormalize != 0u) {
            w = w / sum;
        }
        expert_ids[t * k + lid] = pick_id[lid];
        expert_weights[t * k + lid] = w;
    }
}
