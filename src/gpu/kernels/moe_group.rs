//! Groups a chunk's (token, slot) pairs by expert for prefill (`shaders/moe_group.wgsl`,
//! whose header defines the layouts). CPU twin: [`group`].

use crate::gpu::{Gpu, Op};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/moe_group.wgsl");
const WG: u32 = 256;
/// Words of token masks in workgroup memory, shared among the experts.
const MASK_WORDS: u32 = 2048;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    num_experts: u32,
    top_k: u32,
    tile: u32,
    _pad: u32,
}

/// The most tiles of `tile` rows that `pairs` (token, slot) pairs over `num_experts` experts
/// can make: each active expert's last tile may be partial, so
/// `sum_e ceil(c_e / tile) <= (pairs + active * (tile - 1)) / tile`, `active <= min(E, pairs)`.
pub fn max_tiles(pairs: u32, num_experts: u32, tile: u32) -> u32 {
    let tile = tile.max(1);
    (pairs + pairs.min(num_experts) * (tile - 1)) / tile
}

/// The buffers one grouping is written to, for chunks of up to `max_tokens` tokens.
pub struct GroupBuffers {
    /// u32 `[num_experts, 2]`: offset, count.
    pub expert_ranges: wgpu::Buffer,
    /// u32 `[max_tokens * top_k]`: rows `t * top_k + s`, by expert, ascending within one.
    pub rows: wgpu::Buffer,
    /// u32 `[1 + num_experts]`: how many experts have rows, then those experts ascending.
    pub active_experts: wgpu::Buffer,
    /// u32 `[1 + 3 * max_tiles]`: the number of tiles, then (expert, first, count) per tile.
    pub tiles: wgpu::Buffer,
}

impl GroupBuffers {
    pub fn new(gpu: &Gpu, max_tokens: u32, num_experts: u32, top_k: u32, tile: u32) -> GroupBuffers {
        let [ranges, rows, active, tiles] = Self::sizes(max_tokens, num_experts, top_k, tile);
        GroupBuffers {
            expert_ranges: gpu.storage_zeroed("expert ranges", ranges),
            rows: gpu.storage_zeroed("grouped rows", rows),
            active_experts: gpu.storage_zeroed("active experts", active),
            tiles: gpu.storage_zeroed("expert tiles", tiles),
        }
    }

    /// Bytes [`GroupBuffers::new`] allocates (as `Gpu` counts them).
    pub fn bytes(max_tokens: u32, num_experts: u32, top_k: u32, tile: u32) -> u64 {
        Self::sizes(max_tokens, num_experts, top_k, tile).iter().sum()
    }

    /// Bytes of the expert ranges, rows, active experts and tiles, in that order.
    fn sizes(max_tokens: u32, num_experts: u32, top_k: u32, tile: u32) -> [u64; 4] {
        let words = |n: u32| u64::from(n.max(1)) * 4;
        let pairs = max_tokens * top_k;
        [
            words(2 * num_experts),
            words(pairs),
            words(1 + num_experts),
            words(1 + 3 * max_tiles(pairs, num_experts, tile)),
        ]
    }
}

/// An op grouping the step's `expert_ids` (u32 `[T, top_k]`) by expert into `b` (see
/// [`GroupBuffers`]), cutting each expert's rows into tiles of at most `tile`.
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    expert_ids: &wgpu::Buffer,
    b: &GroupBuffers,
    num_experts: u32,
    top_k: u32,
    tile: u32,
) -> Result<Op> {
    // Workgroup memory: counts and cursors (E words each) and E token masks of `words` words
    // (tokens are grouped 32 * words at a time).
    let words = (MASK_WORDS / num_experts.max(1)).clamp(1, 16);
    if num_experts == 0 || (2 + words) * num_experts * 4 > 16 * 1024 {
        return Err(Error::Gpu(format!("moe_group: {num_experts} experts do not fit the workgroup memory")));
    }
    let constants = [
        ("WG", WG as f64),
        ("E", num_experts as f64),
        ("WORDS", words as f64),
        ("MASKS", (words * num_experts) as f64),
    ];
    let kernel = gpu.kernel("moe_group", SOURCE, &constants)?;
    if tile == 0 {
        return Err(Error::Gpu("moe_group: tiles of 0 rows".into()));
    }
    let params = gpu.uniform("moe_group params", &Params { num_experts, top_k, tile, _pad: 0 });
    let buffers = [&params, step, expert_ids, &b.expert_ranges, &b.rows, &b.active_experts, &b.tiles];
    Ok(gpu.op("moe_group", &kernel, &buffers, [1, 1, 1]))
}

/// The grouping of one chunk, laid out as the kernel writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// `[2 * e]` = offset of expert e's rows in `rows`, `[2 * e + 1]` = their count.
    pub expert_ranges: Vec<u32>,
    /// Rows `t * top_k + s`, grouped by expert (ascending), ascending within an expert.
    pub rows: Vec<u32>,
    /// `[0]` = number of experts with rows, then those experts ascending.
    pub active_experts: Vec<u32>,
    /// `[0]` = number of tiles, then (expert, first, count) per tile.
    pub tiles: Vec<u32>,
}

/// CPU twin: groups `expert_ids` (`[T, top_k]`, row-major) by expert, in tiles of at most
/// `tile` rows. Ids `>= num_experts` are left out, as the kernel leaves them.
pub fn group(expert_ids: &[u32], num_experts: usize, tile: usize) -> Grouping {
    let mut per_expert = vec![Vec::new(); num_experts];
    for (r, &e) in expert_ids.iter().enumerate() {
        if (e as usize) < num_experts {
            per_expert[e as usize].push(r as u32);
        }
    }
    let (mut expert_ranges, mut rows, mut active_experts, mut tiles) = (vec![], vec![], vec![0], vec![0]);
    for (e, list) in per_expert.iter().enumerate() {
        for first in (0..list.len()).step_by(tile) {
            tiles.extend([e as u32, (rows.len() + first) as u32, tile.min(list.len() - first) as u32]);
        }
        expert_ranges.extend([rows.len() as u32, list.len() as u32]);
        rows.extend(list);
        if !list.is_empty() {
            active_experts.push(e as u32);
        }
    }
    active_experts[0] = active_experts.len() as u32 - 1;
    tiles[0] = (tiles.len() / 3) as u32;
    Grouping { expert_ranges, rows, active_experts, tiles }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;

    /// Ids as moe_route writes them: per token, k distinct experts (random order).
    fn routed_ids(tokens: usize, experts: usize, k: usize, seed: u64) -> Vec<u32> {
        let mut ids = Vec::with_capacity(tokens * k);
        for t in 0..tokens {
            // Skewed: low-numbered experts are picked far more often, some never.
            let keys = random(experts, seed * 7919 + t as u64);
            let mut order: Vec<usize> = (0..experts).collect();
            order.sort_by(|&a, &b| (keys[a] - a as f32 * 0.05).total_cmp(&(keys[b] - b as f32 * 0.05)).reverse());
            ids.extend(order[..k].iter().map(|&e| e as u32));
        }
        ids
    }

    fn run(ids: &[u32], tokens: usize, experts: usize, k: usize, tile: usize) -> Grouping {
        let gpu = gpu();
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, 0);
        // Buffers sized for more tokens than run, filled with sentinels.
        let max_tokens = tokens + 5;
        let mut padded = ids.to_vec();
        padded.resize(max_tokens * k, 0);
        let idb = gpu.storage("ids", &padded);
        let capacity = max_tiles((max_tokens * k) as u32, experts as u32, tile as u32) as usize;
        let b = GroupBuffers {
            expert_ranges: gpu.storage("ranges", &vec![u32::MAX; 2 * experts]),
            rows: gpu.storage("rows", &vec![u32::MAX; max_tokens * k]),
            active_experts: gpu.storage("active_experts", &vec![u32::MAX; 1 + experts]),
            tiles: gpu.storage("tiles", &vec![u32::MAX; 1 + 3 * capacity]),
        };
        let op = op(gpu, &step.buffer, &idb, &b, experts as u32, k as u32, tile as u32).unwrap();
        crate::gpu::submit(gpu, &[&op]);
        let rows: Vec<u32> = gpu.read(&b.rows).unwrap();
        assert!(rows[tokens * k..].iter().all(|&r| r == u32::MAX), "wrote past T * k rows");
        let mut active_experts: Vec<u32> = gpu.read(&b.active_experts).unwrap();
        active_experts.truncate(1 + active_experts[0] as usize);
        let mut tiles: Vec<u32> = gpu.read(&b.tiles).unwrap();
        let n = tiles[0] as usize;
        // The bound the dispatch relies on holds for this routing, and nothing past it is written.
        assert!(n <= max_tiles((tokens * k) as u32, experts as u32, tile as u32) as usize, "{n} tiles");
        assert!(tiles[1 + 3 * n..].iter().all(|&w| w == u32::MAX), "wrote past the tiles");
        tiles.truncate(1 + 3 * n);
        Grouping {
            expert_ranges: gpu.read(&b.expert_ranges).unwrap(),
            rows: rows[..tokens * k].to_vec(),
            active_experts,
            tiles,
        }
    }

    #[test]
    fn matches_cpu_twin_on_awkward_sizes() {
        let mut cases = 0;
        for experts in [8usize, 60, 128, 300] {
            for k in [1usize, 2, 4, 8] {
                // 700 tokens: more than one chunk of tokens (512 for E <= 128).
                for tokens in [1usize, 7, 33, 700] {
                    let ids = routed_ids(tokens, experts, k, (experts * 100 + k * 10 + tokens) as u64);
                    // Tiles of 1, of the matmuls' 8, and of an odd 3.
                    let tile = [1, 8, 3][cases % 3];
                    let want = group(&ids, experts, tile);
                    assert_eq!(run(&ids, tokens, experts, k, tile), want, "E {experts} k {k} T {tokens} tile {tile}");
                    cases += 1;
                }
            }
        }
        // E 300 keeps 6 mask words per expert: chunks of 192 tokens.
        assert_eq!(cases, 64);
    }

    #[test]
    fn twin_layout_is_the_documented_one() {
        // Tokens 0..3, k = 2; expert 1 gets rows 0 (t0 s0) and 5 (t2 s1).
        let g = group(&[1, 3, 3, 0, 0, 1], 5, 1);
        assert_eq!(g.expert_ranges, vec![0, 2, 2, 2, 4, 0, 4, 2, 6, 0]);
        assert_eq!(g.rows, vec![3, 4, 0, 5, 1, 2]);
        assert_eq!(g.active_experts, vec![3, 0, 1, 3]);
        assert_eq!(g.tiles, vec![6, 0, 0, 1, 0, 1, 1, 1, 2, 1, 1, 3, 1, 3, 4, 1, 3, 5, 1]);
        // Tiles of 2: one per expert here; of 8 tokens on one expert: 3, 3, 2.
        assert_eq!(group(&[1, 3, 3, 0, 0, 1], 5, 2).tiles, vec![3, 0, 0, 2, 1, 2, 2, 3, 4, 2]);
        assert_eq!(group(&[2; 8], 3, 3).tiles, vec![3, 2, 0, 3, 2, 3, 3, 2, 6, 2]);
    }

    #[test]
    fn groups_what_the_router_kernel_chose() {
        // moe_route then moe_group in one submission, as prefill will run them.
        use crate::gpu::kernels::moe_route;
        let gpu = gpu();
        let (tokens, experts, k) = (33usize, 60usize, 4usize);
        let logits = random(tokens * experts, 77);
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, 0);
        let lb = gpu.storage("logits", &logits);
        let ids = gpu.storage_zeroed("ids", (tokens * k * 4) as u64);
        let weights = gpu.storage_zeroed("weights", (tokens * k * 4) as u64);
        let (t, e, kk) = (tokens as u32, experts as u32, k as u32);
        let b = GroupBuffers::new(gpu, t, e, kk, 8);
        let route = moe_route::op(
            gpu,
            &step.buffer,
            crate::gpu::kernels::Columns { buffer: &lb, offset: 0, stride: e },
            None,
            &ids,
            &weights,
            t,
            e,
            kk,
            &crate::config::Routing::softmax(true),
        )
        .unwrap();
        let grouping = op(gpu, &step.buffer, &ids, &b, e, kk, 8).unwrap();
        crate::gpu::submit(gpu, &[&route, &grouping]);
        let got_ids: Vec<u32> = gpu.read(&ids).unwrap();
        let want = group(&got_ids, experts, 8);
        assert_eq!(gpu.read::<u32>(&b.expert_ranges).unwrap(), want.expert_ranges);
        assert_eq!(gpu.read::<u32>(&b.rows).unwrap(), want.rows);
        assert_eq!(gpu.read::<u32>(&b.active_experts).unwrap()[..want.active_experts.len()], want.active_experts[..]);
        assert_eq!(gpu.read::<u32>(&b.tiles).unwrap()[..want.tiles.len()], want.tiles[..]);
    }
}
