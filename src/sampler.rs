//! Choosing the next token from logits: greedy, or temperature with top-k and top-p.
//!
//! Randomness is counter-based: the uniform number for step n is a hash of (seed, n), so a
//! seeded run gives the same tokens however the steps are scheduled (and the GPU sampler can
//! compute the same number without carrying RNG state between dispatches).
//!
//! This is also the CPU twin of `shaders/sample.wgsl`, which picks the same token bit for bit.
//! To make that possible the arithmetic after the logits is integer:
//! - Order: logits compare by [`key`], the IEEE total order (ties: lower token id first).
//! - Weights: token i weighs `w_i = weight(l_i)` ≈ `2^31 * exp((l_i - max) / temperature)`,
//!   an integer computed from `y = (l_i - max) * (log2(e) / temperature)` (one f32 subtraction
//!   and one f32 multiplication, correctly rounded on every GPU and CPU) by a fixed-point exp2
//!   through two tables: relative error below 2e-5, and tokens lighter than 2^-31 of the top
//!   one weigh 0. Sums of weights are exact (u64), so their order does not matter.
//! - Candidates: the `top_k` tokens of highest key (ties to the lower id); all when top_k is 0.
//! - Nucleus: with Z the candidates' total weight and M = max(1, floor(Z * p24 / 2^24)),
//!   p24 = floor(top_p * 2^24), keep the candidates whose key is at least tau, the largest key
//!   such that the candidates at or above it weigh at least M. (Tokens tied at tau are all
//!   kept: the nucleus is a threshold on the logit.)
//! - Draw: target = floor(W * u / 2^24) with W the kept weight and u the 24 random bits of
//!   [`uniform_bits`]; the token is the first kept one at which the running sum of weights
//!   exceeds target, the kept tokens taken in the order of `(id % 256, id / 256)` (the order
//!   in which the GPU's 256 threads hold them; any fixed order gives the same distribution).

/// Sampling settings. `temperature <= 0` means greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    /// The one range check for every surface (CLI, server, browser): temperature in [0, 2]
    /// (OpenAI's range; 0 is greedy) and top_p in (0, 1]. On failure, the setting's name and
    /// the problem, so the server can report the parameter as OpenAI does.
    pub fn check_setting(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=MAX_TEMPERATURE).contains(&self.temperature) {
            let problem = format!("temperature {} is not in [0, {MAX_TEMPERATURE}]", self.temperature);
            return Err(("temperature", problem));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(("top_p", format!("top_p {} is not in (0, 1]", self.top_p)));
        }
        Ok(())
    }

    /// [`SamplingParams::check_setting`] as a request error.
    pub fn check(&self) -> crate::Result<()> {
        self.check_setting().map_err(|(_, problem)| crate::Error::Request(problem))
    }
}

/// The highest temperature a request may ask for.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// A seed from the clock, for requests that give none.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The 24 random bits of SplitMix64's finaliser of (seed, step).
pub fn uniform_bits(seed: u64, step: u64) -> u32 {
    let mut z = seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as u32
}

/// A uniform number in [0, 1) from (seed, step): [`uniform_bits`] / 2^24 (exact in f32,
/// strictly below 1).
pub fn uniform(seed: u64, step: u64) -> f32 {
    uniform_bits(seed, step) as f32 / (1u64 << 24) as f32
}

/// Index of the largest logit; ties go to the lowest index.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The order-preserving u32 image of an f32 (the order of `f32::total_cmp`).
pub fn key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// What [`sample`] does for one request over a vocabulary, in the form the GPU sampler takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub greedy: bool,
    /// log2(e) / temperature.
    pub scale: f32,
    /// Candidates kept by top-k; 0: all (top_k 0 or >= vocab).
    pub top_k: u32,
    /// floor(top_p * 2^24) when top_p < 1.
    pub top_p24: Option<u32>,
}

impl Plan {
    pub fn new(params: &SamplingParams, vocab: usize) -> Plan {
        let scale = std::f32::consts::LOG2_E / params.temperature;
        // A temperature so small that the scale overflows is greedy in all but name.
        let greedy = params.temperature <= 0.0 || params.top_k == 1 || !scale.is_finite() || vocab <= 1;
        let top_k = if params.top_k >= vocab { 0 } else { params.top_k as u32 };
        let top_p24 = (params.top_p < 1.0).then_some((params.top_p * (1u32 << 24) as f32) as u32);
        Plan { greedy, scale, top_k, top_p24 }
    }
}

/// The weight of a logit: ≈ 2^31 * 2^((logit - max) * scale), an integer (see the module docs).
pub fn weight(logit: f32, max: f32, scale: f32) -> u32 {
    let y = ((logit - max) * scale).max(-64.0);
    let a = (-y * 65536.0) as u32; // |y| in 16.16 fixed point, truncated
    let (n, f) = (a >> 16, a & 0xffff);
    let t = exp2_tables();
    let m = ((t[(f >> 8) as usize] as u64 * t[256 + (f & 255) as usize] as u64) >> 31) as u32;
    if n >= 32 {
        0
    } else {
        m >> n
    }
}

/// `[round(2^31 * 2^(-j/256)) for j < 256] ++ [round(2^31 * 2^(-j/65536)) for j < 256]`: the
/// tables of [`weight`]'s exp2 (uploaded for the GPU sampler).
pub fn exp2_tables() -> &'static [u32; 512] {
    static TABLES: std::sync::OnceLock<[u32; 512]> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = [0u32; 512];
        for j in 0..256 {
            t[j] = (2f64.powf(-(j as f64) / 256.0) * 2f64.powi(31)).round() as u32;
            t[256 + j] = (2f64.powf(-(j as f64) / 65536.0) * 2f64.powi(31)).round() as u32;
        }
        t
    })
}

/// The draw walks the kept tokens in the order of `(id % DRAW_THREADS, id / DRAW_THREADS)`.
pub const DRAW_THREADS: u32 = 256;

/// floor(z * u / 2^24), exactly.
pub fn scale24(z: u64, u: u32) -> u64 {
    ((z as u128 * u as u128) >> 24) as u64
}

/// The token for generation step `step`.
pub fn sample(logits: &[f32], params: &SamplingParams, step: u64) -> u32 {
    match trace(logits, params, step) {
        None => argmax(logits),
        Some(t) => t.token,
    }
}

/// The integers a non-greedy draw is decided by; the GPU sampler reports the same ones in its
/// debug mode, and its tests compare them bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub token: u32,
    /// The 24 random bits of the step.
    pub u: u32,
    /// Total weight of the top-k candidates.
    pub z: u64,
    /// Total weight of the kept tokens (the nucleus); `z` without top-p.
    pub kept: u64,
    pub target: u64,
    /// Key of the k-th candidate (0 without top-k), and the highest id among the candidates
    /// with that key when top-k leaves out some tokens of that key (`u32::MAX` otherwise).
    pub kth: u32,
    pub tie_last: u32,
    /// The nucleus threshold key (0 without top-p).
    pub tau: u32,
}

/// [`sample`]'s workings for a non-greedy plan (`None` when greedy).
pub fn trace(logits: &[f32], params: &SamplingParams, step: u64) -> Option<Trace> {
    let plan = Plan::new(params, logits.len());
    if plan.greedy {
        return None;
    }
    let max = logits[argmax(logits) as usize];
    // Candidates by descending key, ties to the lower id, cut to top-k.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| key(logits[b as usize]).cmp(&key(logits[a as usize])).then(a.cmp(&b)));
    let (mut kth, mut tie_last) = (0, u32::MAX);
    if plan.top_k > 0 {
        let k = plan.top_k as usize;
        kth = key(logits[order[k - 1] as usize]);
        if key(logits[order[k] as usize]) == kth {
            tie_last = order[k - 1];
        }
        order.truncate(k);
    }
    let w = |i: u32| weight(logits[i as usize], max, plan.scale);
    let z: u64 = order.iter().map(|&i| w(i) as u64).sum();
    // Nucleus: the largest key at or above which the candidates weigh at least M.
    let mut tau = 0;
    if let Some(p24) = plan.top_p24 {
        let m = scale24(z, p24).max(1);
        let mut mass = 0;
        for &i in &order {
            mass += w(i) as u64;
            // The run of equal keys in which the mass first reaches M is kept whole.
            if mass >= m {
                tau = key(logits[i as usize]);
                break;
            }
        }
    }
    order.retain(|&i| key(logits[i as usize]) >= tau);
    order.sort_unstable_by_key(|&i| (i % DRAW_THREADS, i / DRAW_THREADS));
    let kept: u64 = order.iter().map(|&i| w(i) as u64).sum();
    let u = uniform_bits(params.seed, step);
    let target = scale24(kept, u);
    let mut acc = 0;
    for &i in &order {
        acc += w(i) as u64;
        if target < acc {
            return Some(Trace { token: i, u, z, kept, target, kth, tie_last, tau });
        }
    }
    unreachable!("the top token weighs 2^31, so target < kept")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_unit_interval_and_spread() {
        let n = 10_000;
        let values: Vec<f32> = (0..n).map(|i| uniform(42, i)).collect();
        assert!(values.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = values.iter().sum::<f32>() / n as f32;
        // Standard error of the mean of U(0,1) over 10^4 draws is 0.0029; allow 4 sigma.
        assert!((mean - 0.5).abs() < 0.012, "mean {mean}");
    }

    #[test]
    fn greedy_and_top_k_1_pick_the_argmax() {
        let logits = [0.1, 2.0, -1.0, 2.0];
        assert_eq!(sample(&logits, &SamplingParams::default(), 0), 1);
        let p = SamplingParams { temperature: 5.0, top_k: 1, ..Default::default() };
        assert_eq!(sample(&logits, &p, 7), 1);
        let p = SamplingParams { temperature: 1e-45, ..Default::default() };
        assert_eq!(sample(&logits, &p, 7), 1);
    }

    #[test]
    fn keys_order_as_total_cmp() {
        let v = [f32::NEG_INFINITY, -3.5, -1e-40, -0.0, 0.0, 1e-40, 2.0, f32::INFINITY];
        for a in v {
            for b in v {
                assert_eq!(key(a).cmp(&key(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
    }

    #[test]
    fn weights_are_the_exponential_to_2e_5() {
        // Fixed-point exponent: truncation by < 2^-16 in log2 (1.1e-5 relative), tables
        // rounded to 2^-31, the product truncated: < 2e-5 relative over the range where the
        // integer weight has >= 2^16 units, and within one unit below it.
        for (i, x) in (0..20_000).map(|i| (i, -(i as f32) * 0.001)) {
            let got = weight(x, 0.0, std::f32::consts::LOG2_E) as f64;
            let want = (x as f64).exp() * 2f64.powi(31);
            assert!((got - want).abs() <= want * 2e-5 + 1.0, "{i}: {got} vs {want}");
        }
        assert_eq!(weight(0.0, 0.0, 1.0), 1 << 31);
        assert_eq!(weight(f32::NEG_INFINITY, 0.0, 1.0), 0);
        assert_eq!(weight(-30.5, 0.0, 1.0), 1); // 2^0.5
        assert_eq!(weight(-31.5, 0.0, 1.0), 0);
    }

    #[test]
    fn top_p_excludes_the_tail() {
        // Probabilities ~0.88, 0.12, ~0: top_p 0.5 leaves only the first.
        let logits = [2.0, 0.0, -30.0];
        let p = SamplingParams { temperature: 1.0, top_p: 0.5, seed: 3, ..Default::default() };
        assert!((0..200).all(|s| sample(&logits, &p, s) == 0));
    }

    /// Counts of each token over `n` draws against the exact probabilities `p` (f64): each
    /// within 5 binomial standard deviations.
    fn assert_follows(logits: &[f32], params: SamplingParams, p: &[f64], n: u64) {
        let mut counts = vec![0u64; logits.len()];
        for s in 0..n {
            counts[sample(logits, &params, s) as usize] += 1;
        }
        for (i, (&c, &pi)) in counts.iter().zip(p).enumerate() {
            let mean = pi * n as f64;
            let sd = (n as f64 * pi * (1.0 - pi)).sqrt();
            assert!((c as f64 - mean).abs() <= 5.0 * sd + 1e-9, "token {i}: {c} vs {mean:.1} (sd {sd:.1}) {params:?}");
        }
    }

    fn softmax64(logits: &[f32], t: f64, keep: &[usize]) -> Vec<f64> {
        let e: Vec<f64> =
            (0..logits.len()).map(|i| if keep.contains(&i) { (logits[i] as f64 / t).exp() } else { 0.0 }).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([ln 3, 0]) = [0.75, 0.25]; over 4000 draws the count of token 1 has
        // mean 1000 and sd 27; allow 5 sd.
        let logits = [3f32.ln(), 0.0];
        let p = SamplingParams { temperature: 1.0, seed: 9, ..Default::default() };
        let ones = (0..4000).filter(|&s| sample(&logits, &p, s) == 1).count();
        assert!((865..=1135).contains(&ones), "{ones}");

        // Temperature, top-k and top-p together, on 6 tokens.
        let logits = [1.0f32, 0.2, 2.0, -0.5, 1.5, 0.9];
        let all = [0, 1, 2, 3, 4, 5];
        let params = |temperature, top_k, top_p| SamplingParams { temperature, top_k, top_p, seed: 5 };
        assert_follows(&logits, params(0.7, 0, 1.0), &softmax64(&logits, 0.7, &all), 20_000);
        assert_follows(&logits, params(1.3, 3, 1.0), &softmax64(&logits, 1.3, &[2, 4, 0]), 20_000);
        // At T = 1: p(2) = 0.391, p(4) = 0.237, p(0) = 0.144: the nucleus of 0.7 is {2, 4, 0}
        // (0.628 after two, 0.772 after three).
        assert_follows(&logits, params(1.0, 0, 0.7), &softmax64(&logits, 1.0, &[2, 4, 0]), 20_000);
        assert_follows(&logits, params(1.0, 2, 0.7), &softmax64(&logits, 1.0, &[2, 4]), 20_000);
    }

    #[test]
    fn candidate_sets_follow_their_definitions() {
        // Ties: top-k takes the lower ids; the nucleus keeps every token tied at its edge.
        let logits = [0.0f32, 1.0, 1.0, 1.0, -1.0];
        let seen = |params: SamplingParams| {
            let mut seen = [false; 5];
            (0..400).for_each(|s| seen[sample(&logits, &params, s) as usize] = true);
            seen
        };
        let p = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 1 };
        assert_eq!(seen(p), [false, true, true, false, false]);
        let p = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.1, seed: 1 };
        assert_eq!(seen(p), [false, true, true, true, false]);
        let p = SamplingParams { temperature: 1.0, top_k: 4, top_p: 0.9, seed: 1 };
        assert_eq!(seen(p), [true, true, true, true, false]);
    }
}
