// sample.wgsl — picks the next token from one row of logits, bit for bit as the CPU twin
// `sampler::sample(logits, params, n)` does (see src/sampler.rs for the definitions), where n
// is the generation step, kept on the GPU in state[0] and incremented here. Runs after
// sample_argmax.wgsl, whose per-block argmaxes it reduces first (SPLIT; otherwise it makes
// that pass itself, in one workgroup).
//
//   greedy:  token = argmax(logits), ties to the lowest id (float comparison).
//   else:    key(l) = IEEE total-order image of l as u32; max = the greedy token's logit;
//            w(i)   = weight(l_i): y = max((l_i - max) * scale, -64), a = u32(-y * 65536),
//                     m = (T_hi[(a & 0xffff) >> 8] * T_lo[a & 0xff]) >> 31 (64-bit product),
//                     w = m >> (a >> 16), 0 when a >> 16 >= 32        (≈ 2^31 exp((l_i - max) / T))
//            cand   = the top_k tokens of highest key, ties to the lower id (all when top_k 0);
//                     found by a 4-round radix select of the k-th key K (256-bin histograms of
//                     8 key bits); when the tokens at K are more than needed (rare), tie_last =
//                     the id of the last one taken (through contiguous blocks of ids).
//            Z      = sum of w over cand (exact: 64-bit integer);
//            nucleus (use_top_p): M = max(1, floor(Z * top_p24 / 2^24)); tau = the largest key with
//                     sum{w_i : i in cand, key_i >= tau} >= M, by a 4-round radix select over
//                     histograms of weight (64-bit bins: a u32 atomic plus a carry counter);
//                     kept = cand with key >= tau (tau = 0 without top-p); W = kept weight.
//            u      = 24 bits of SplitMix64(seed, n) (64-bit arithmetic emulated in u32);
//            target = floor(W * u / 2^24); token = the first kept token, in the order
//                     (id % 256, id / 256), at which the running sum of w exceeds target. Thread
//                     t holds ids t, t + 256, ...: a serial scan of the threads' shares finds the
//                     thread holding target, then the workgroup walks that thread's ids with
//                     inclusive scans, 256 ids at a time.
//   Then token_ids[0] = token, ring[n % ring_len] = token, state[0] = n + 1.
// When top_k <= CAP the candidates are first compacted into workgroup memory, in the draw
// order, and everything after the top-k selection runs over them only (their draw walks
// contiguous blocks of them).
//
// Bindings (group 0):
//   0 params     uniform  { vocab: u32, ring_len: u32, last_row: u32, _pad: u32 }
//                last_row != 0: logits hold [n_tokens, vocab] rows and the last is sampled
//   1 step       uniform  { n_tokens: u32, position: u32, ... } (see gpu::step)
//   2 request    uniform  { greedy: u32, top_k: u32, use_top_p: u32, top_p24: u32,
//                           scale: f32, seed_lo: u32, seed_hi: u32, _pad: u32 }
//                written when a request starts (sampler::Plan; scale = log2(e) / temperature;
//                top_k 0: no top-k, always < vocab)
//   3 logits     storage read   f32 [vocab] (or [n_tokens, vocab], see last_row)
//   4 tables     storage read   u32 [512]: T_hi[256] then T_lo[256] (sampler::exp2_tables)
//   5 state      storage rw     u32 [1]: the generation step n (the host zeroes it per request)
//   6 token_ids  storage rw     u32 [>= 1]: [0] = the token (the next step's input)
//   7 ring       storage rw     u32 [ring_len]: [n % ring_len] = the token (for readback)
//   8 partials   storage read   u32 [2 * ceil(vocab / 4096)]: sample_argmax's (max bits, id) per
//                block (SPLIT only)
// Dispatch: (1, 1, 1), one workgroup of 256 threads. Passes over the vocabulary are strided
// (coalesced), loads issued 8 at a time. Workgroup memory ~11 KiB.

const WG: u32 = 256u; // also the number of histogram bins
override CAP: u32 = 1024u;
// true: the argmax comes from sample_argmax.wgsl's partials (binding 8); false: from a pass
// over the logits here (binding 8 is then a placeholder).
override SPLIT: bool = true;
// Tests only: instead of the ring slot, write [token, u, Z lo, Z hi, W lo, W hi, target lo,
// target hi, K, tie_last, tau] to ring[0..11] (sampler::Trace).
override DEBUG: bool = false;
const NONE: u32 = 0xffffffffu;
const BLOCK: u32 = 4096u; // sample_argmax.wgsl's

struct Params { vocab: u32, ring_len: u32, last_row: u32, _pad: u32 }
struct Step { n_tokens: u32, position: u32, _pad0: u32, _pad1: u32 }
struct Request {
    greedy: u32, top_k: u32, use_top_p: u32, top_p24: u32,
    scale: f32, seed_lo: u32, seed_hi: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<uniform> request: Request;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> tables: array<u32>;
@group(0) @binding(5) var<storage, read_write> state: array<u32>;
@group(0) @binding(6) var<storage, read_write> token_ids: array<u32>;
@group(0) @binding(7) var<storage, read_write> ring: array<u32>;
@group(0) @binding(8) var<storage, read> partials: array<u32>;

var<workgroup> tab: array<u32, 512>;
var<workgroup> hist_lo: array<atomic<u32>, WG>;
var<workgroup> hist_hi: array<atomic<u32>, WG>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_a: array<u32, WG>;
var<workgroup> red_b: array<u32, WG>;
var<workgroup> cids: array<u32, CAP>;
// Scalars that thread 0 computes for all (read after a barrier).
var<workgroup> sh_digit: u32;
var<workgroup> sh_rem: u32;
var<workgroup> sh_tie_thread: u32;
var<workgroup> sh_tie_rank: u32;
var<workgroup> sh_tie_last: u32;
var<workgroup> sh_z: vec2<u32>;
var<workgroup> sh_kept: vec2<u32>;
var<workgroup> sh_target: vec2<u32>;
var<workgroup> sh_token: u32;
var<workgroup> sh_split: u32;
var<workgroup> sh_tstar: u32;
var<workgroup> sh_start: vec2<u32>;

// ---- 64-bit unsigned arithmetic on vec2<u32>(lo, hi) ----

fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = p01 + p10;
    let mid_carry = select(0u, 0x10000u, mid < p01);
    let lo = p00 + (mid << 16u);
    let lo_carry = select(0u, 1u, lo < p00);
    return vec2<u32>(lo, p11 + (mid >> 16u) + mid_carry + lo_carry);
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn less64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y < b.y || (a.y == b.y && a.x < b.x);
}

// Low 64 bits of a * b.
fn mul64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let w = mul_wide(a.x, b.x);
    return vec2<u32>(w.x, w.y + a.x * b.y + a.y * b.x);
}

// a >> s, 0 < s < 32.
fn shr64(a: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}

// floor(z * u / 2^24) for z < 2^56, u <= 2^24.
fn scale24(z: vec2<u32>, u: u32) -> vec2<u32> {
    let h = (z.x >> 24u) | (z.y << 8u);
    let l = z.x & 0xffffffu;
    let low = shr64(mul_wide(l, u), 24u);
    return add64(mul_wide(h, u), low);
}

// ---- the sampler's definitions (src/sampler.rs) ----

fn uniform_bits(seed: vec2<u32>, n: u32) -> u32 {
    let n1 = vec2<u32>(n + 1u, select(0u, 1u, n == 0xffffffffu));
    var z = vec2<u32>(seed.x, seed.y) ^ mul64(n1, vec2<u32>(0x7f4a7c15u, 0x9e3779b9u));
    z = mul64(z ^ shr64(z, 30u), vec2<u32>(0x1ce4e5b9u, 0xbf58476du));
    z = mul64(z ^ shr64(z, 27u), vec2<u32>(0x133111ebu, 0x94d049bbu));
    z = z ^ shr64(z, 31u);
    return z.y >> 8u;
}

// Loads are issued 8 at a time (clamped into range, so unconditionally) into two vec4s, then
// used: one workgroup has few threads to hide memory latency with.
const U: u32 = 8u;

fn load4(base: u32, i: u32, stride: u32, last: u32) -> vec4<f32> {
    return vec4<f32>(
        logits[base + min(i, last)],
        logits[base + min(i + stride, last)],
        logits[base + min(i + 2u * stride, last)],
        logits[base + min(i + 3u * stride, last)],
    );
}

// Item ids j, j + stride, ... (clamped to last), and their logits.
fn ids4(j: u32, stride: u32, last: u32, compact: bool) -> vec4<u32> {
    return vec4<u32>(
        item_id(min(j, last), compact),
        item_id(min(j + stride, last), compact),
        item_id(min(j + 2u * stride, last), compact),
        item_id(min(j + 3u * stride, last), compact),
    );
}

fn gather4(base: u32, ids: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(logits[base + ids.x], logits[base + ids.y], logits[base + ids.z], logits[base + ids.w]);
}

fn pick(u: u32, a: vec4<f32>, b: vec4<f32>) -> f32 {
    return select(b[u & 3u], a[u & 3u], u < 4u);
}

fn pick_id(u: u32, a: vec4<u32>, b: vec4<u32>) -> u32 {
    return select(b[u & 3u], a[u & 3u], u < 4u);
}

// The id of item j: a compacted candidate, or the token j itself.
fn item_id(j: u32, compact: bool) -> u32 {
    if (compact) {
        return cids[j];
    }
    return j;
}

fn key_of(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn weight(l: f32, mx: f32) -> u32 {
    let y = max((l - mx) * request.scale, -64.0);
    let a = u32(-y * 65536.0);
    let n = a >> 16u;
    let f = a & 0xffffu;
    let p = mul_wide(tab[f >> 8u], tab[256u + (f & 255u)]);
    let m = (p.y << 1u) | (p.x >> 31u);
    if (n >= 32u) {
        return 0u;
    }
    return m >> n;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let vocab = params.vocab;
    var base = 0u;
    if (params.last_row != 0u) {
        base = (step.n_tokens - 1u) * vocab;
    }
    for (var i = lid; i < 512u; i += WG) {
        tab[i] = tables[i];
    }

    // ---- argmax, ties to the lowest id: from sample_argmax's blocks, or a pass here ----
    var bv = 0.0;
    var bi = NONE;
    if (SPLIT) {
        let n_blocks = (vocab + BLOCK - 1u) / BLOCK;
        for (var b = lid; b < n_blocks; b += WG) {
            let v = bitcast<f32>(partials[2u * b]);
            if (bi == NONE || v > bv) {
                bv = v;
                bi = partials[2u * b + 1u];
            }
        }
    } else {
        for (var i0 = lid; i0 < vocab; i0 += U * WG) {
            let va = load4(base, i0, WG, vocab - 1u);
            let vb = load4(base, i0 + 4u * WG, WG, vocab - 1u);
            for (var u = 0u; u < U; u++) {
                let v = pick(u, va, vb);
                let i = i0 + u * WG;
                if (i < vocab && (bi == NONE || v > bv)) {
                    bv = v;
                    bi = i;
                }
            }
        }
    }
    red_v[lid] = bv;
    red_a[lid] = bi;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let ov = red_v[lid + stride];
            let oi = red_a[lid + stride];
            let mine = red_a[lid];
            if (oi != NONE && (mine == NONE || ov > red_v[lid] || (ov == red_v[lid] && oi < mine))) {
                red_v[lid] = ov;
                red_a[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let best = red_a[0];
    let mx = red_v[0];
    workgroupBarrier();

    if (request.greedy != 0u) {
        if (lid == 0u) {
            let n = state[0];
            token_ids[0] = best;
            ring[n % params.ring_len] = best;
            state[0] = n + 1u;
        }
        return;
    }

    // ---- top-k: the k-th largest key K, and the last id tie_last taken at K ----
    let top_k = request.top_k;
    var kth = 0u; // with no top-k every key is >= 0 ...
    var tie_last = NONE; // ... and every tie is taken
    var compact = false;
    if (top_k > 0u) {
        var prefix = 0u;
        var mask = 0u;
        var rem = top_k; // rank of the k-th among the keys under the prefix
        for (var level = 0u; level < 4u; level++) {
            let shift = 24u - 8u * level;
            atomicStore(&hist_lo[lid], 0u);
            workgroupBarrier();
            for (var i0 = lid; i0 < vocab; i0 += U * WG) {
                let va = load4(base, i0, WG, vocab - 1u);
                let vb = load4(base, i0 + 4u * WG, WG, vocab - 1u);
                for (var u = 0u; u < U; u++) {
                    let k = key_of(pick(u, va, vb));
                    if (i0 + u * WG < vocab && (k & mask) == prefix) {
                        atomicAdd(&hist_lo[(k >> shift) & 255u], 1u);
                    }
                }
            }
            workgroupBarrier();
            if (lid == 0u) {
                var cum = 0u;
                var d = 255u;
                loop {
                    let c = atomicLoad(&hist_lo[d]);
                    if (cum + c >= rem || d == 0u) {
                        break;
                    }
                    cum += c;
                    d -= 1u;
                }
                sh_digit = d;
                sh_rem = rem - cum;
                sh_split = select(0u, 1u, atomicLoad(&hist_lo[d]) > rem - cum);
            }
            workgroupBarrier();
            prefix |= sh_digit << shift;
            mask |= 255u << shift;
            rem = sh_rem;
            workgroupBarrier();
        }
        kth = prefix;
        let need = rem; // ties at K to take, in id order (1 <= need <= ties)

        // Only when the tokens at K are more than needed (rare): tie_last, the id of the
        // need-th of them, through contiguous blocks of ids.
        if (workgroupUniformLoad(&sh_split) != 0u) {
            let blk = (vocab + WG - 1u) / WG;
            let lo = min(lid * blk, vocab);
            let hi = min(lo + blk, vocab);
            var ties = 0u;
            for (var i = lo; i < hi; i++) {
                ties += select(0u, 1u, key_of(logits[base + i]) == kth);
            }
            red_a[lid] = ties;
            workgroupBarrier();
            if (lid == 0u) {
                var before = 0u;
                for (var t = 0u; t < WG; t++) {
                    let e = red_a[t];
                    if (before + e >= need) {
                        sh_tie_thread = t;
                        sh_tie_rank = need - before;
                        break;
                    }
                    before += e;
                }
            }
            workgroupBarrier();
            if (lid == sh_tie_thread) {
                var seen = 0u;
                for (var i = lo; i < hi; i++) {
                    if (key_of(logits[base + i]) == kth) {
                        seen += 1u;
                        if (seen == sh_tie_rank) {
                            sh_tie_last = i;
                            break;
                        }
                    }
                }
            }
            workgroupBarrier();
            tie_last = sh_tie_last;
        }

        // Compaction into cids, in draw order (id % WG, id / WG): thread t's candidates
        // (ids t, t + WG, ...) at the exclusive sum of the counts of threads before it.
        if (top_k <= CAP) {
            compact = true;
            var count = 0u;
            for (var i0 = lid; i0 < vocab; i0 += U * WG) {
                let va = load4(base, i0, WG, vocab - 1u);
                let vb = load4(base, i0 + 4u * WG, WG, vocab - 1u);
                for (var u = 0u; u < U; u++) {
                    let i = i0 + u * WG;
                    let k = key_of(pick(u, va, vb));
                    count += select(0u, 1u, i < vocab && (k > kth || (k == kth && i <= tie_last)));
                }
            }
            red_a[lid] = count;
            workgroupBarrier();
            if (lid == 0u) {
                var offset = 0u;
                for (var t = 0u; t < WG; t++) {
                    let c = red_a[t];
                    red_a[t] = offset;
                    offset += c;
                }
            }
            workgroupBarrier();
            var at = red_a[lid];
            for (var i0 = lid; i0 < vocab; i0 += U * WG) {
                let va = load4(base, i0, WG, vocab - 1u);
                let vb = load4(base, i0 + 4u * WG, WG, vocab - 1u);
                for (var u = 0u; u < U; u++) {
                    let i = i0 + u * WG;
                    let k = key_of(pick(u, va, vb));
                    if (i < vocab && (k > kth || (k == kth && i <= tie_last))) {
                        cids[at] = i;
                        at += 1u;
                    }
                }
            }
            workgroupBarrier();
        }
    }
    // The items: the compacted candidates, or the whole vocabulary. Either way, the draw
    // below walks the tokens in the order (id % WG, id / WG).
    var n_items = vocab;
    if (compact) {
        n_items = top_k;
    }

    // ---- Z: the candidates' weight (and, over the whole vocabulary, each thread's share) ----
    var z = vec2<u32>(0u, 0u);
    for (var j0 = lid; j0 < n_items; j0 += U * WG) {
        let ia = ids4(j0, WG, n_items - 1u, compact);
        let ib = ids4(j0 + 4u * WG, WG, n_items - 1u, compact);
        let va = gather4(base, ia);
        let vb = gather4(base, ib);
        for (var u = 0u; u < U; u++) {
            let l = pick(u, va, vb);
            let k = key_of(l);
            if (j0 + u * WG < n_items && (compact || k > kth || (k == kth && pick_id(u, ia, ib) <= tie_last))) {
                z = add64(z, vec2<u32>(weight(l, mx), 0u));
            }
        }
    }
    var share = z; // thread lid's tokens' weight
    red_a[lid] = z.x;
    red_b[lid] = z.y;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let s = add64(vec2<u32>(red_a[lid], red_b[lid]), vec2<u32>(red_a[lid + stride], red_b[lid + stride]));
            red_a[lid] = s.x;
            red_b[lid] = s.y;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        sh_z = vec2<u32>(red_a[0], red_b[0]);
        sh_kept = sh_z;
    }
    workgroupBarrier();

    // ---- nucleus: tau, the largest key whose candidates at or above weigh >= M ----
    var tau = 0u;
    if (request.use_top_p != 0u) {
        let zz = sh_z;
        var big_m = scale24(zz, request.top_p24);
        if (big_m.x == 0u && big_m.y == 0u) {
            big_m = vec2<u32>(1u, 0u);
        }
        var prefix = 0u;
        var mask = 0u;
        var above = vec2<u32>(0u, 0u); // weight of candidates above the prefix (thread 0)
        for (var level = 0u; level < 4u; level++) {
            let shift = 24u - 8u * level;
            atomicStore(&hist_lo[lid], 0u);
            atomicStore(&hist_hi[lid], 0u);
            workgroupBarrier();
            for (var j0 = lid; j0 < n_items; j0 += U * WG) {
                let ia = ids4(j0, WG, n_items - 1u, compact);
                let ib = ids4(j0 + 4u * WG, WG, n_items - 1u, compact);
                let va = gather4(base, ia);
                let vb = gather4(base, ib);
                for (var u = 0u; u < U; u++) {
                    let l = pick(u, va, vb);
                    let k = key_of(l);
                    let cand = compact || k > kth || (k == kth && pick_id(u, ia, ib) <= tie_last);
                    if (j0 + u * WG < n_items && cand && (k & mask) == prefix) {
                        let w = weight(l, mx);
                        if (w != 0u) {
                            let d = (k >> shift) & 255u;
                            let old = atomicAdd(&hist_lo[d], w);
                            if (old + w < old) {
                                atomicAdd(&hist_hi[d], 1u);
                            }
                        }
                    }
                }
            }
            workgroupBarrier();
            if (lid == 0u) {
                var cum = above;
                var d = 255u;
                loop {
                    let c = vec2<u32>(atomicLoad(&hist_lo[d]), atomicLoad(&hist_hi[d]));
                    let next = add64(cum, c);
                    if (!less64(next, big_m) || d == 0u) {
                        sh_kept = next;
                        break;
                    }
                    cum = next;
                    d -= 1u;
                }
                above = cum;
                sh_digit = d;
            }
            workgroupBarrier();
            prefix |= sh_digit << shift;
            mask |= 255u << shift;
            workgroupBarrier();
        }
        tau = prefix;

        // Each thread's share of the kept weight (full vocabulary only).
        if (!compact) {
            share = vec2<u32>(0u, 0u);
            for (var i0 = lid; i0 < vocab; i0 += U * WG) {
                let va = load4(base, i0, WG, vocab - 1u);
                let vb = load4(base, i0 + 4u * WG, WG, vocab - 1u);
                for (var u = 0u; u < U; u++) {
                    let i = i0 + u * WG;
                    let l = pick(u, va, vb);
                    let k = key_of(l);
                    if (i < vocab && (k > kth || (k == kth && i <= tie_last)) && k >= tau) {
                        share = add64(share, vec2<u32>(weight(l, mx), 0u));
                    }
                }
            }
        }
    }

    // ---- the draw: the target in the kept weight, walked in order (id % WG, id / WG) ----
    if (lid == 0u) {
        let u = uniform_bits(vec2<u32>(request.seed_lo, request.seed_hi), state[0]);
        sh_target = scale24(sh_kept, u);
        sh_token = NONE;
    }
    workgroupBarrier();
    let goal = sh_target; // (`target` is a reserved word)
    if (compact) {
        // cids is in draw order: contiguous blocks of items, a serial scan of the blocks'
        // weights, then the block holding the target is walked.
        let blk = (n_items + WG - 1u) / WG;
        let lo = min(lid * blk, n_items);
        let hi = min(lo + blk, n_items);
        var s = vec2<u32>(0u, 0u);
        for (var j = lo; j < hi; j++) {
            let l = logits[base + cids[j]];
            if (key_of(l) >= tau) {
                s = add64(s, vec2<u32>(weight(l, mx), 0u));
            }
        }
        red_a[lid] = s.x;
        red_b[lid] = s.y;
        workgroupBarrier();
        if (lid == 0u) {
            var acc = vec2<u32>(0u, 0u);
            for (var t = 0u; t < WG; t++) {
                let here = vec2<u32>(red_a[t], red_b[t]);
                red_a[t] = acc.x;
                red_b[t] = acc.y;
                acc = add64(acc, here);
            }
        }
        workgroupBarrier();
        let start = vec2<u32>(red_a[lid], red_b[lid]);
        if (!less64(goal, start) && less64(goal, add64(start, s))) {
            var acc = start;
            for (var j = lo; j < hi; j++) {
                let id = cids[j];
                let l = logits[base + id];
                if (key_of(l) >= tau) {
                    acc = add64(acc, vec2<u32>(weight(l, mx), 0u));
                    if (less64(goal, acc)) {
                        sh_token = id;
                        break;
                    }
                }
            }
        }
    } else {
        // Thread t holds ids t, t + WG, ...: a serial scan of the threads' shares finds the
        // thread t* holding the target; then all threads walk t*'s ids, WG at a time, with an
        // inclusive scan of their weights.
        red_a[lid] = share.x;
        red_b[lid] = share.y;
        workgroupBarrier();
        if (lid == 0u) {
            var acc = vec2<u32>(0u, 0u);
            for (var t = 0u; t < WG; t++) {
                let next = add64(acc, vec2<u32>(red_a[t], red_b[t]));
                if (less64(goal, next)) {
                    sh_tstar = t;
                    sh_start = acc;
                    break;
                }
                acc = next;
            }
        }
        workgroupBarrier();
        let tstar = sh_tstar;
        var start = sh_start;
        let rows = (vocab + WG - 1u) / WG; // ids per thread, at most
        for (var m0 = 0u; m0 < rows; m0 += WG) {
            let i = tstar + (m0 + lid) * WG;
            var w = 0u;
            if (i < vocab) {
                let l = logits[base + i];
                let k = key_of(l);
                if ((k > kth || (k == kth && i <= tie_last)) && k >= tau) {
                    w = weight(l, mx);
                }
            }
            // Inclusive scan of w over the workgroup (64-bit).
            var incl = vec2<u32>(w, 0u);
            workgroupBarrier();
            red_a[lid] = incl.x;
            red_b[lid] = incl.y;
            workgroupBarrier();
            for (var d = 1u; d < WG; d *= 2u) {
                var add = vec2<u32>(0u, 0u);
                if (lid >= d) {
                    add = vec2<u32>(red_a[lid - d], red_b[lid - d]);
                }
                workgroupBarrier();
                incl = add64(incl, add);
                red_a[lid] = incl.x;
                red_b[lid] = incl.y;
                workgroupBarrier();
            }
            let before = add64(start, vec2<u32>(incl.x - w, incl.y - select(0u, 1u, incl.x < w)));
            let after = add64(start, incl);
            if (w != 0u && !less64(goal, before) && less64(goal, after)) {
                sh_token = i;
            }
            start = add64(start, vec2<u32>(red_a[WG - 1u], red_b[WG - 1u]));
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        let n = state[0];
        var token = sh_token;
        if (token == NONE) { // unreachable: the top token weighs 2^31 > target
            token = best;
        }
        token_ids[0] = token;
        if (DEBUG) {
            ring[0] = token;
            ring[1] = uniform_bits(vec2<u32>(request.seed_lo, request.seed_hi), n);
            ring[2] = sh_z.x;
            ring[3] = sh_z.y;
            ring[4] = sh_kept.x;
            ring[5] = sh_kept.y;
            ring[6] = sh_target.x;
            ring[7] = sh_target.y;
            ring[8] = kth;
            ring[9] = tie_last;
            ring[10] = tau;
        } else {
            ring[n % params.ring_len] = token;
        }
        state[0] = n + 1u;
    }
}
