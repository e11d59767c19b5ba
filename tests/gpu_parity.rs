//! The GPU engine against Hugging Face transformers on every family fixture (f32/bf16/f16
//! weights as f32, and the exact-4-bit-grid GGUF Q4_0 and GPTQ fixtures in INT4).
//!
//! Tolerance: 1e-3 of the largest |logit|. Weights are exactly the reference's (the INT4 path
//! dequantizes in the kernel with the same f32 arithmetic); what differs is summation order in
//! every reduction (matmuls, norms, softmax) and WGSL's exp/sqrt, each a few ulps, through two
//! layers. The CPU reference, which has the same kind of differences, lands at ~2e-6; 1e-3
//! leaves room for GPU reduction orders while a real slip (a wrong pairing, norm or routing
//! rule) moves logits by 1e-2 and more.

mod common;

use common::{fixture, fixture_model, relative_error, shared_gpu, Reference};
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
    let model = GpuModel::new(shared_gpu(), &files.config, &weights, 12, 64).unwrap();
    let logits = model.forward(&reference.tokens, 0).unwrap();
    let err = relative_error(&logits, &reference.logits);
    println!("{name}: GPU max |logit error| / max |logit| = {err:.2e}");
    assert!(err < 1e-3, "{name}: GPU logits differ from transformers by {err:.2e} of max |logit|");

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
