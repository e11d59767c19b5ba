//! Prefill computes logits only where they are read, and MoE prefill runs grouped by expert:
//! on every family fixture, the generator (earlier prompt chunks without a head, the last chunk
//! with the head on its last row only, then decode) gives transformers' greedy continuation, and
//! a chunk's last-row logits equal the last row of the all-rows forward.

mod common;

use common::{fixture, fixture_model, shared_gpu, Reference};
use flint::engine::Generator;
use flint::gpu::generator::GpuGenerator;
use flint::gpu::kernels::KvFormat;
use flint::gpu::model::{GpuModel, Logits};
use flint::sampler::SamplingParams;
use flint::ModelFiles;

fn check(name: &str) {
    let dir = fixture(name);
    let reference = Reference::of(&dir);
    let path = fixture_model(name);
    let files = ModelFiles::open(&path).unwrap();
    let weights = files.load_weights().unwrap();
    // Chunks of 5: the prompt runs as chunks without a head, then a last one with it.
    let model = GpuModel::new(shared_gpu(), &files.config, &weights, 5, 64, KvFormat::F32).unwrap();
    let prompt = &reference.greedy_prompt;
    assert!(prompt.len() > 5, "{name}: the prompt must span chunks");

    // The last row's logits alone are the all-rows forward's last row: the same kernels sum each
    // token's terms in the same order whatever the head's token tile, so only a compiler's choice
    // of fused multiply-adds may move them, by ulps (1e-6 of max |logit| is ~100 ulps of it).
    let all = model.forward(&prompt[..5], 0).unwrap();
    model.run_chunk(&prompt[..5], 0, Logits::Last).unwrap();
    let vocab = files.config.vocab_size;
    let last: Vec<f32> = model.gpu.read(&model.logits).unwrap();
    let err = common::relative_error(&[last[..vocab].to_vec()], &all[4..]);
    assert!(err < 1e-6, "{name}: last-row logits differ from the all-rows forward by {err:.2e}");

    let mut generator = GpuGenerator::new(model).unwrap();
    generator.start(prompt, &SamplingParams::default(), reference.greedy.len()).unwrap();
    let greedy: Vec<u32> = (0..reference.greedy.len()).map(|_| generator.next_token().unwrap()).collect();
    assert_eq!(greedy, reference.greedy, "{name}: greedy continuation through the generator");
}

test_every_fixture!(check);
