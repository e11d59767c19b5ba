//! The GPU engine against Hugging Face transformers on every family fixture (f32/bf16/f16
//! weights as f32, and the exact-4-bit-grid GGUF Q4_0 and GPTQ fixtures in INT4).
//!
//! Tolerance: 1e-3 of the largest |logit|. Weights are exactly the reference's (the INT4 path
//! dequantizes in the kernel with the same f32 arithmetic); what differs is summation order in
//! every reduction (matmuls, norms, softmax) and WGSL's exp/sqrt, each a few ulps, through two
//! layers. The CPU reference, which has the same kind of differences, lands at ~2e-6; 1e-3
//! leaves room for GPU reduction orders while a real slip (a wrong pairing, norm or routing
//! rule) moves logits by 1e-2 and more. This holds for the f32 KV cache.
//!
//! The f16 cache rounds every cached key and value to f16: a relative error of at most 2^-11
//! each (to nearest). A value's error moves an attention output (a convex combination) by at
//! most 2^-11 of the largest |v|; a key's moves a score s by at most 2^-11 |s|-ish (the dot
//! product's terms each by 2^-11), hence each softmax weight by a factor exp(±2^-11 (|s_j| +
//! |s_max|)), under 1% for the |s| <= ~10 of these fixtures. Through o-proj, the residual and a
//! second layer that reads the first's keys, logits move by a few 1e-3 of max |logit| in the
//! worst case, typically far less (errors of independent roundings cancel). The bound is 1e-2
//! of max |logit|, 10x the f32 bound; a wrong packing or pairing of halves moves logits by
//! 1e-1 and more. (Measured on lavapipe: 4.3e-4 to 1.2e-3 over the 21 fixtures.)

mod common;

use common::{fixture, fixture_model, relative_error, shared_gpu, Reference};
use flint::gpu::kernels::KvFormat;
use flint::gpu::model::GpuModel;
use flint::ModelFiles;

fn check(name: &str) {
    let dir = fixture(name);
    let reference = Reference::of(&dir);
    let path = fixture_model(name);
    let files = ModelFiles::open(&path).unwrap();
    let weights = files.load_weights().unwrap();
    // Chunks of 12 tokens: the 32-token sequence runs as 12 + 12 + 8, so chunked prefill over
    // an existing cache is exercised too.
    let model = GpuModel::new(shared_gpu(), &files.config, &weights, 12, 64, KvFormat::F32).unwrap();
    let logits = model.forward(&reference.tokens, 0).unwrap();
    let err = relative_error(&logits, &reference.logits);
    println!("{name}: GPU max |logit error| / max |logit| = {err:.2e}");
    assert!(err < 1e-3, "{name}: GPU logits differ from transformers by {err:.2e} of max |logit|");

    let half = GpuModel::new(shared_gpu(), &files.config, &weights, 12, 64, KvFormat::F16).unwrap();
    let err = relative_error(&half.forward(&reference.tokens, 0).unwrap(), &reference.logits);
    println!("{name}: GPU with an f16 KV cache: {err:.2e}");
    assert!(err < 1e-2, "{name}: f16-cache logits differ from transformers by {err:.2e} of max |logit|");
    drop(half);

    // Greedy: prefill the prompt, then one token at a time (decode, T = 1).
    let mut last = model.forward(&reference.greedy_prompt, 0).unwrap().pop().unwrap();
    let mut greedy = Vec::new();
    for position in reference.greedy_prompt.len()..reference.greedy_prompt.len() + reference.greedy.len() {
        let next = flint::sampler::argmax(&last);
        greedy.push(next);
        last = model.forward(&[next], position).unwrap().pop().unwrap();
    }
    assert_eq!(greedy, reference.greedy, "{name}: greedy continuation on the GPU");
}

test_every_fixture!(check);
