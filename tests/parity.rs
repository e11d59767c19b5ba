//! The CPU reference against Hugging Face transformers, on every family fixture.
//!
//! Tolerance: 1e-4 of the largest |logit|. Both sides compute in f32 from the same stored
//! weights; the remaining differences are summation order inside dot products (a few ulps of
//! values up to ~10), amplified through two layers and the softmax, which stays well below
//! 1e-4 relative. A semantic slip (a wrong norm, RoPE pairing, router rule) moves logits by
//! 1e-2 or more.

use flint::reference::{KvCache, ReferenceModel};
use flint::ModelFiles;

mod common;
use common::{fixture, fixture_model, relative_error, Reference};

fn load(name: &str) -> (ReferenceModel, Reference) {
    let dir = fixture(name);
    let reference = Reference::of(&dir);
    let path = fixture_model(name);
    let files = ModelFiles::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    (files.load_reference().unwrap_or_else(|e| panic!("{name}: {e}")), reference)
}

fn greedy(model: &ReferenceModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = KvCache::new(&model.config);
    let mut logits = model.forward(&mut cache, prompt).unwrap().pop().unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let next = flint::sampler::argmax(&logits);
        out.push(next);
        logits = model.forward(&mut cache, &[next]).unwrap().pop().unwrap();
    }
    out
}

fn check(name: &str) {
    let (model, reference) = load(name);
    assert!(reference.tokens.len() >= 24);

    // Prefill of the whole sequence at once.
    let mut cache = KvCache::new(&model.config);
    let full = model.forward(&mut cache, &reference.tokens).unwrap();
    let err = relative_error(&full, &reference.logits);
    println!("{name}: max |logit error| / max |logit| = {err:.2e}");
    assert!(err < 1e-4, "{name}: logits differ from transformers by {err:.2e} of max |logit|");

    // KV-cache decode (a prefill of 5, then one token at a time) equals full recomputation.
    let mut cache = KvCache::new(&model.config);
    let mut incremental = model.forward(&mut cache, &reference.tokens[..5]).unwrap();
    for &t in &reference.tokens[5..] {
        incremental.extend(model.forward(&mut cache, &[t]).unwrap());
    }
    let drift = relative_error(&incremental, &full);
    assert!(drift < 1e-5, "{name}: cached decode differs from full recomputation by {drift:.2e}");

    assert_eq!(
        greedy(&model, &reference.greedy_prompt, reference.greedy.len()),
        reference.greedy,
        "{name}: greedy continuation"
    );
}

test_every_fixture!(check);
