//! MoE router: softmax or sigmoid scores, an optional selection bias, group-limited or plain
//! top-k, optional renormalisation and a scale (`shaders/moe_route.wgsl`).
//! CPU twin: `ops::route`, as `ReferenceModel::moe` uses it.

use super::Columns;
use crate::config::{GroupScore, Routing, Scoring};
use crate::gpu::{Gpu, Op};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/moe_route.wgsl");
/// The kernel keeps the picks of one token in workgroup memory.
pub const MAX_TOP_K: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
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

/// An op routing up to `max_tokens` tokens by `routing`: reads `num_experts` columns of
/// `router_logits`' rows (T = the step's n_tokens) and, with a selection bias, `bias` f32 `[E]`;
/// writes `expert_ids` u32 `[T, top_k]` and `expert_weights` f32 `[T, top_k]`, in the order of
/// their choice scores, largest first.
#[allow(clippy::too_many_arguments)]
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    router_logits: Columns,
    bias: Option<&wgpu::Buffer>,
    expert_ids: &wgpu::Buffer,
    expert_weights: &wgpu::Buffer,
    max_tokens: u32,
    num_experts: u32,
    top_k: u32,
    routing: &Routing,
) -> Result<Op> {
    if top_k == 0 || top_k > num_experts || top_k > MAX_TOP_K {
        return Err(Error::Gpu(format!("moe_route: top_k {top_k} with {num_experts} experts (at most {MAX_TOP_K})")));
    }
    if routing.selection_bias != bias.is_some() {
        return Err(Error::Gpu("moe_route: a selection bias in only one of the routing and the buffers".into()));
    }
    let (groups, groups_used, group_score) = match routing.groups {
        None => (1, 1, 0),
        Some(g) => (g.count as u32, g.used as u32, u32::from(g.score == GroupScore::TopTwoSum)),
    };
    if groups > 64 || groups == 0 || !num_experts.is_multiple_of(groups) {
        return Err(Error::Gpu(format!(
            "moe_route: {groups} groups of {num_experts} experts (at most 64 equal groups)"
        )));
    }
    // One thread per expert up to 256 (ranking costs each thread E comparisons per expert it
    // holds), at least MAX_TOP_K (threads s < k write slot s).
    let wg = num_experts.next_power_of_two().clamp(MAX_TOP_K, 256);
    // The probabilities' array holds at least 64: the ranking loop runs over 64 at least, as
    // lavapipe runs loops of 32 trips or fewer there 10-40x slower per trip (measured: 16 experts
    // took 6.7 ms per isolated call, 32 took 13.5 ms, 33 or more 0.2 ms; padded, all 0.2 ms). The
    // cause lies in llvmpipe's code generation; the trip count alone decides it.
    let e_slots = num_experts.max(64);
    // Workgroup memory: E scores and choices + WG reduction slots + 2 * 64 picks + 2 * 64 group
    // slots, in 4-byte words.
    if (2 * e_slots + wg + 4 * MAX_TOP_K) * 4 > 16 * 1024 {
        return Err(Error::Gpu(format!("moe_route: {num_experts} experts exceed the workgroup memory")));
    }
    let kernel = gpu.kernel("moe_route", SOURCE, &[("WG", wg as f64), ("E", e_slots as f64)])?;
    let params = Params {
        num_experts,
        top_k,
        renormalize: routing.renormalize as u32,
        logit_offset: router_logits.offset,
        logit_stride: router_logits.stride,
        sigmoid: u32::from(routing.scoring == Scoring::Sigmoid),
        has_bias: u32::from(bias.is_some()),
        groups,
        groups_used,
        group_score,
        scale: routing.scale,
        _pad: 0,
    };
    let params = gpu.uniform("moe_route params", &params);
    let unused = gpu.storage_zeroed("moe_route no bias", 4);
    let buffers = [&params, step, router_logits.buffer, expert_ids, expert_weights, bias.unwrap_or(&unused)];
    Ok(gpu.op("moe_route", &kernel, &buffers, [max_tokens, 1, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExpertGroups;
    use crate::gpu::kernels::testing::{gpu, max_relative_error, random};
    use crate::gpu::step::Step;

    /// The twin's choice for one token, as the kernel writes it.
    fn route(logits: &[f32], top_k: usize, renormalize: bool) -> (Vec<u32>, Vec<f32>) {
        route_by(logits, None, top_k, &Routing::softmax(renormalize))
    }

    fn route_by(logits: &[f32], bias: Option<&[f32]>, top_k: usize, r: &Routing) -> (Vec<u32>, Vec<f32>) {
        let (ids, weights) = crate::ops::route(logits, bias, top_k, r);
        (ids.iter().map(|&e| e as u32).collect(), weights)
    }

    /// Router logits whose order is unambiguous: per token, a random permutation of an evenly
    /// spaced ladder (step 6/E, so neighbouring probabilities differ by >= 4% relative, far
    /// above the ~1e-6 by which GPU and CPU softmax may differ), plus noise below half a step.
    fn separated_logits(tokens: usize, experts: usize, seed: u64) -> Vec<f32> {
        let noise = random(tokens * experts, seed + 1);
        let mut out = Vec::with_capacity(tokens * experts);
        for t in 0..tokens {
            let keys = random(experts, seed * 1000 + t as u64);
            let mut order: Vec<usize> = (0..experts).collect();
            order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
            let mut row = vec![0.0; experts];
            let spacing = 6.0 / experts as f32;
            for (rank, &e) in order.iter().enumerate() {
                row[e] = (rank as f32 - experts as f32 / 2.0) * spacing + noise[t * experts + e] * spacing * 0.4;
            }
            out.extend(row);
        }
        out
    }

    fn run(logits: &[f32], tokens: usize, experts: usize, k: usize, renorm: bool) -> (Vec<u32>, Vec<f32>) {
        run_columns(logits, 0, experts, tokens, experts, k, &Routing::softmax(renorm), None)
    }

    /// [`run`] with each token's logits at columns `offset ..` of rows of `stride`.
    #[allow(clippy::too_many_arguments)]
    fn run_columns(
        logits: &[f32],
        offset: usize,
        stride: usize,
        tokens: usize,
        experts: usize,
        k: usize,
        routing: &Routing,
        bias: Option<&[f32]>,
    ) -> (Vec<u32>, Vec<f32>) {
        let gpu = gpu();
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, 0);
        let lb = gpu.storage("logits", logits);
        // Built for more tokens than run: the extra workgroups must not write (sentinels stay).
        let max_tokens = tokens + 3;
        let ids = gpu.storage("ids", &vec![u32::MAX; max_tokens * k]);
        let weights = gpu.storage("weights", &vec![-7.0f32; max_tokens * k]);
        let cols = Columns { buffer: &lb, offset: offset as u32, stride: stride as u32 };
        let bias = bias.map(|b| gpu.storage("bias", b));
        let (t, e) = (max_tokens as u32, experts as u32);
        let op = op(gpu, &step.buffer, cols, bias.as_ref(), &ids, &weights, t, e, k as u32, routing).unwrap();
        crate::gpu::submit(gpu, &[&op]);
        let ids: Vec<u32> = gpu.read(&ids).unwrap();
        let weights: Vec<f32> = gpu.read(&weights).unwrap();
        assert!(ids[tokens * k..].iter().all(|&i| i == u32::MAX), "surplus workgroups wrote ids");
        assert!(weights[tokens * k..].iter().all(|&w| w == -7.0), "surplus workgroups wrote weights");
        (ids[..tokens * k].to_vec(), weights[..tokens * k].to_vec())
    }

    #[test]
    fn matches_cpu_twin_on_awkward_sizes() {
        let mut cases = 0;
        for experts in [8usize, 60, 128, 200] {
            for k in [1usize, 2, 4, 8] {
                for tokens in [1usize, 7, 33] {
                    for renorm in [false, true] {
                        let logits = separated_logits(tokens, experts, (experts * 100 + k * 10 + tokens) as u64);
                        let (ids, weights) = run(&logits, tokens, experts, k, renorm);
                        let (mut want_ids, mut want_w) = (vec![], vec![]);
                        for row in logits.chunks_exact(experts) {
                            let (i, w) = route(row, k, renorm);
                            want_ids.extend(i);
                            want_w.extend(w);
                        }
                        assert_eq!(ids, want_ids, "E {experts} k {k} T {tokens} renorm {renorm}");
                        // exp within a few ulps, sums of <= 200 terms reassociated (~1e-6
                        // relative each), one division: 1e-5 of the largest weight is ample.
                        let err = max_relative_error(&weights, &want_w);
                        assert!(err < 1e-5, "E {experts} k {k} T {tokens} renorm {renorm}: {err:e}");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 96);
    }

    #[test]
    fn logits_as_columns_of_wider_rows() {
        // The router's rows may carry the shared expert's gate logit (and here more) beside the
        // experts' logits: columns outside [offset, offset + E) are never read, even when larger.
        let (tokens, experts, k, offset, stride) = (7, 60, 4, 2, 63);
        let logits = separated_logits(tokens, experts, 9);
        let wide: Vec<f32> =
            logits.chunks_exact(experts).flat_map(|row| [&[50.0, 50.0][..], row, &[50.0][..]].concat()).collect();
        assert_eq!(wide.len(), tokens * stride);
        let (ids, weights) = run_columns(&wide, offset, stride, tokens, experts, k, &Routing::softmax(true), None);
        let (mut want_ids, mut want_w) = (vec![], vec![]);
        for row in logits.chunks_exact(experts) {
            let (i, w) = route(row, k, true);
            want_ids.extend(i);
            want_w.extend(w);
        }
        assert_eq!(ids, want_ids);
        assert!(max_relative_error(&weights, &want_w) < 1e-5);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        // Equal logits give bit-equal probabilities on either side, so the tie rule decides.
        let experts = 60;
        let mut logits = vec![0.0f32; 2 * experts];
        for (e, v) in logits.iter_mut().enumerate() {
            *v = ((e % experts) % 5) as f32 * 0.5; // five values, each 12 times
        }
        for k in [1, 2, 4, 8] {
            let (ids, weights) = run(&logits, 2, experts, k, true);
            let (want_ids, want_w) = route(&logits[..experts], k, true);
            assert_eq!(want_ids[..k.min(3)], [4, 9, 14][..k.min(3)]);
            assert_eq!(ids[..k], want_ids[..]);
            assert_eq!(ids[k..], want_ids[..]);
            assert!(max_relative_error(&weights[..k], &want_w) < 1e-5);
        }
    }

    #[test]
    fn rejects_what_it_cannot_hold() {
        let gpu = gpu();
        let step = Step::new(gpu);
        let b = gpu.storage_zeroed("b", 64);
        let cols = Columns { buffer: &b, offset: 0, stride: 8 };
        let r = Routing::softmax(true);
        assert!(op(gpu, &step.buffer, cols, None, &b, &b, 1, 8, 9, &r).is_err());
        assert!(op(gpu, &step.buffer, cols, None, &b, &b, 1, 8, 0, &r).is_err());
        // A bias the routing does not use, and groups that do not divide the experts.
        assert!(op(gpu, &step.buffer, cols, Some(&b), &b, &b, 1, 8, 2, &r).is_err());
        let groups = Some(ExpertGroups { count: 3, used: 1, score: GroupScore::Max });
        assert!(op(gpu, &step.buffer, cols, None, &b, &b, 1, 8, 2, &Routing { groups, ..r }).is_err());
    }

    #[test]
    fn deepseek_routing_matches_cpu_twin() {
        // Sigmoid with a selection bias and groups scored by their two best (V3), softmax with
        // groups scored by their best (V2), each scaled, renormalised or not.
        for (experts, k, groups, used) in
            [(8usize, 3usize, 4usize, 2usize), (64, 6, 8, 3), (160, 8, 8, 4), (60, 4, 1, 1)]
        {
            for (scoring, score, renormalize) in
                [(Scoring::Sigmoid, GroupScore::TopTwoSum, true), (Scoring::Softmax, GroupScore::Max, false)]
            {
                let tokens = 9;
                let logits = separated_logits(tokens, experts, (experts * 7 + k) as u64);
                let sigmoid = scoring == Scoring::Sigmoid;
                let bias: Vec<f32> = random(experts, 5).iter().map(|v| v * 0.01).collect();
                let routing = Routing {
                    scoring,
                    selection_bias: sigmoid,
                    groups: (groups > 1).then_some(ExpertGroups { count: groups, used, score }),
                    renormalize,
                    scale: 2.5,
                };
                let bias = sigmoid.then_some(&bias[..]);
                let (ids, weights) = run_columns(&logits, 0, experts, tokens, experts, k, &routing, bias);
                let (mut want_ids, mut want_w) = (vec![], vec![]);
                for row in logits.chunks_exact(experts) {
                    let (i, w) = route_by(row, bias, k, &routing);
                    want_ids.extend(i);
                    want_w.extend(w);
                }
                let case = format!("E {experts} k {k} groups {groups}/{used} {scoring:?}");
                assert_eq!(ids, want_ids, "{case}");
                assert!(max_relative_error(&weights, &want_w) < 1e-5, "{case}");
                // Every pick lies in one of the kept groups.
                if groups > 1 {
                    for row in ids.chunks_exact(k) {
                        let mut kept: Vec<u32> = row.iter().map(|&e| e / (experts / groups) as u32).collect();
                        kept.sort();
                        kept.dedup();
                        assert!(kept.len() <= used, "{case}: picks from {kept:?}");
                    }
                }
            }
        }
    }
}
