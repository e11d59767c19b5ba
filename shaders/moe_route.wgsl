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
//   0 params          uniform  { num_experts: u32, top_k: u32, renormalize: u32, _pad: u32 }
//   1 step            uniform  { n_tokens: u32, position: u32, ... } (see gpu::step); T = n_tokens
//   2 router_logits   storage read   f32 [T, num_experts]
//   3 expert_ids      storage rw     u32 [T, top_k]   (row t at t * top_k)
//   4 expert_weights  storage rw     f32 [T, top_k]
// Overrides: WG (threads per workgroup, a power of two), E (= num_experts: sizes workgroup memory).
// Dispatch: (max_tokens, 1, 1) workgroups of WG threads, one workgroup per token; workgroups
// past n_tokens return at once. Threads take experts e = lid, lid + WG, ...; max and sum are
// tree reductions in workgroup memory; each of the k picks is an arg-max tree reduction over
// (p, index) with ties to the lower index, after which the pick is masked out with p = -1.

override WG: u32 = 64u;
override E: u32 = 128u;

struct Params { num_experts: u32, top_k: u32, renormalize: u32, _pad: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> router_logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> expert_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> expert_weights: array<f32>;

var<workgroup> probs: array<f32, E>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
// The picks so far (k <= 64).
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
    let base = t * n;

    // Max.
    var m = -3.40282347e38;
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
    workgroupBarrier();

    // k rounds of arg-max; ties to the lower index.
    for (var slot = 0u; slot < k; slot++) {
        var bv = -2.0;
        var bi = 0xffffffffu;
        for (var e = lid; e < n; e += WG) {
            let v = probs[e];
            if (v > bv) { // ascending e: an equal value keeps the lower index
                bv = v;
                bi = e;
            }
        }
        red_v[lid] = bv;
        red_i[lid] = bi;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
            if (lid < stride) {
                let ov = red_v[lid + stride];
                let oi = red_i[lid + stride];
                if (ov > red_v[lid] || (ov == red_v[lid] && oi < red_i[lid])) {
                    red_v[lid] = ov;
                    red_i[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            let id = red_i[0];
            pick_id[slot] = id;
            pick_p[slot] = red_v[0];
            probs[id] = -1.0;
        }
        workgroupBarrier();
    }

    if (lid == 0u) {
        var sum = 0.0;
        for (var slot = 0u; slot < k; slot++) {
            sum += pick_p[slot];
        }
        for (var slot = 0u; slot < k; slot++) {
            var w = pick_p[slot];
            if (params.renormalize != 0u) {
                w = w / sum;
            }
            expert_ids[t * k + slot] = pick_id[slot];
            expert_weights[t * k + slot] = w;
        }
    }
}
