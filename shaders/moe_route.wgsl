// moe_route.wgsl — MoE router: per token t, scores s = softmax(router_logits[t, :]) over all E
// experts (max-subtracted, f32) or s_e = sigmoid(logit_e) (SIGMOID); choice scores
// c_e = s_e + bias[e] (HAS_BIAS: DeepSeek-V3's selection bias) or s_e; with groups > 1, the
// experts form `groups` equal groups scored by their best c (group_score 0) or the sum of their
// two best (1), and only the `groups_used` best groups' experts stay candidates; chosen = the k
// largest c among the candidates, largest first, ties to the lower index (exactly
// ops::route, with ops::top_k's order), and
//   expert_ids[t, s]     = chosen[s]
//   expert_weights[t, s] = scale * s[chosen[s]]                                   (renormalize == 0)
//                        = scale * s[chosen[s]] / (s[chosen[0]] + ... + s[chosen[k-1]])   (renormalize != 0)
// The renormalising sum is taken in top-k order, as the twin does. The shared expert's
// sigmoid gate is not computed here: moe_combine applies it.
//
// Bindings (group 0):
//   0 params          uniform  { num_experts: u32, top_k: u32, renormalize: u32, logit_offset: u32,
//                                 logit_stride: u32, sigmoid: u32, has_bias: u32, groups: u32,
//                                 groups_used: u32, group_score: u32, scale: f32, _pad: u32 }
//   1 step            uniform  { n_tokens: u32, position: u32, ... } (see gpu::step); T = n_tokens
//   2 router_logits   storage read   f32 [T, logit_stride]: token t's logits at columns
//                                    logit_offset .. + num_experts (the router's matmul may add
//                                    the shared expert's gate logit as one more column)
//   3 expert_ids      storage rw     u32 [T, top_k]   (row t at t * top_k)
//   4 expert_weights  storage rw     f32 [T, top_k]
//   5 bias            storage read   f32 [num_experts] (has_bias; otherwise any buffer, unread)
// Overrides: WG (threads per workgroup, a power of two >= 64), E (>= num_experts, >= 64: sizes
// workgroup memory).
// Dispatch: (max_tokens, 1, 1) workgroups of WG threads, one workgroup per token; workgroups
// past n_tokens return at once. Threads take experts e = lid, lid + WG, ...; max and sum are
// tree reductions in workgroup memory; threads g < groups score group g and then rank it among
// the groups; then each expert counts the candidates before it in the order (c descending,
// index ascending), and those of rank < k write their slot; threads s < k then form the
// renormalising sum (each the same, in slot order) and write slot s. groups <= 64.

override WG: u32 = 64u;
override E: u32 = 128u;

struct Params {
    num_experts: u32,
    top_k: u32,
    renormalize: u32,
    logit_offset: u32,
    logit_stride: u32,
    sigmoid: u32,
    has_bias: u32,
    groups: u32,
    groups_used: u32,
    group_score: u32,
    scale: f32,
    _pad: u32,
}
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> router_logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> expert_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> expert_weights: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

// The lowest finite f32, written exactly (a decimal literal that rounds past it is an error in Tint).
const LOWEST: f32 = -0x1.fffffep+127f;

var<workgroup> probs: array<f32, E>;
// Choice scores: the candidates' biased scores, LOWEST for the others and for the padding.
var<workgroup> choice: array<f32, E>;
var<workgroup> group_value: array<f32, 64>;
var<workgroup> group_kept: array<u32, 64>;
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

    if (params.sigmoid != 0u) {
        for (var e = lid; e < n; e += WG) {
            probs[e] = 1.0 / (1.0 + exp(-router_logits[base + e]));
        }
    } else {
        // Max.
        var m = LOWEST;
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
    }
    for (var e = lid; e < n; e += WG) {
        var c = probs[e];
        if (params.has_bias != 0u) {
            c += bias[e];
        }
        choice[e] = c;
    }
    // Padding up to 64 experts, below every score: it ranks after all of them.
    for (var e = n + lid; e < max(n, 64u); e += WG) {
        choice[e] = LOWEST;
    }
    workgroupBarrier();

    // Group-limited selection: score each group, keep the best groups_used (ties to the lower
    // group), and take the other groups' experts out of the running.
    let groups = params.groups;
    if (groups > 1u) {
        let size = n / groups;
        if (lid < groups) {
            var best = LOWEST;
            var second = LOWEST;
            for (var e = lid * size; e < (lid + 1u) * size; e++) {
                let c = choice[e];
                if (c > best) {
                    second = best;
                    best = c;
                } else if (c > second) {
                    second = c;
                }
            }
            group_value[lid] = select(best, best + second, params.group_score != 0u);
        }
        workgroupBarrier();
        if (lid < groups) {
            let v = group_value[lid];
            var rank = 0u;
            for (var j = 0u; j < groups; j++) {
                let w = group_value[j];
                rank += select(0u, 1u, w > v || (w == v && j < lid));
            }
            group_kept[lid] = select(0u, 1u, rank < params.groups_used);
        }
        workgroupBarrier();
        for (var e = lid; e < n; e += WG) {
            if (group_kept[e / size] == 0u) {
                choice[e] = LOWEST;
            }
        }
        workgroupBarrier();
    }

    // Each expert's rank in the order (p descending, index ascending): the top k write
    // themselves into their slot. The loop runs over at least 64 (padding counts for nothing):
    // on lavapipe the same loop with a trip count of 32 or less ran 10-40x slower per comparison
    // (an isolated call with 16 experts: 6.7 ms; padded: 0.2 ms).
    for (var e = lid; e < n; e += WG) {
        let p = choice[e];
        var rank = 0u;
        for (var j = 0u; j < max(n, 64u); j++) {
            let q = choice[j];
            rank += select(0u, 1u, q > p || (q == p && j < e));
        }
        if (rank < k) {
            pick_id[rank] = e;
            pick_p[rank] = probs[e];
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
        w = w * params.scale;
        expert_ids[t * k + lid] = pick_id[lid];
        expert_weights[t * k + lid] = w;
    }
}
